"""``python -m mindiss``: the command line (``mindiss.app.cli``)."""
from .app.cli import main

main()
