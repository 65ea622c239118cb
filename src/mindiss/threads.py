"""Thread control for small-tensor work (one place, used by the library and the experiments)."""
from __future__ import annotations

import contextlib


@contextlib.contextmanager
def single_thread():
    """One torch intra-op thread inside the block, restored on exit. Tensors of ~1e4 elements gain
    nothing from a second thread, and intra-op threads stall by 10x when another process shares
    the cores (measured on the 2-core CI machine: a batched quadrature took 0.4 s on 2 threads
    under load, 0.03 s on 1)."""
    import torch

    old = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(old)
