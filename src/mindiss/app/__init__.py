"""The application layer: ``cli`` (typer commands), ``config`` (the TOML schema on pydantic),
``rundir`` (the --out directory), ``report`` and ``experiments`` (the reproduction), ``bench``.

May import everything; nothing in the library imports app.
"""
