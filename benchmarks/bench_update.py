"""Library update loop vs a bare torch loop, same arithmetic, same process.

    python benchmarks/bench_update.py [--n-chains 100000] [--steps 1000] [--repeats 5] [--dtype float32]

Prints the median times and the speed ratio library/bare (target >= 0.8). Same as `mindiss bench`.
"""
from mindiss.cli import app

if __name__ == "__main__":
    import sys

    app(["bench", *sys.argv[1:]])
