"""The ``steelqc`` command line: one Typer app, one module per stage's commands.

Each ``*_commands`` module registers its commands on the shared app when imported.
"""

from steelqc.cli._app import app

__all__ = ["app"]
