"""Library update loop (mindiss.train) vs a bare torch loop, same arithmetic, same process.

    python benchmarks/bench_update.py [--quick] [--json] [--device cpu|cuda] [--repeats 5]
                                      [--dtype float32|float64|both] [--case trap|double_well|mlp|all]

Same as `mindiss bench`: M chain-steps/s for the harmonic trap (exact OU), the tilted double well
(Euler-Maruyama) and a 2-64-64-1 MLP energy (Euler-Maruyama), each next to a hand-written loop, the
ratio library/bare (targets: >= 0.8 for the trap and the double well, >= 1.2 M chain-steps/s for the
MLP) and peak memory per chain. See benchmarks/README.md for the figures and the method.
"""
from mindiss.app.cli import app

if __name__ == "__main__":
    import sys

    app(["bench", *sys.argv[1:]])
