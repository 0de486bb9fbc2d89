"""The ``steelqc`` command line: one Typer app, one module per stage's commands.

Each ``*_commands`` module registers its commands on the shared app when imported.
"""

# Import order is registration order, which is the order of `steelqc --help` (panels: data, training,
# promotion, inspection).
# isort: off
from steelqc.cli._app import app
from steelqc.cli import data_commands  # noqa: F401  (registers synth, import-voc, import-masks)
from steelqc.cli import validate_commands  # noqa: F401  (registers validate)
from steelqc.cli import patch_commands  # noqa: F401  (registers patches)
from steelqc.cli import pipeline_commands  # noqa: F401  (registers pipeline, demo)
from steelqc.cli import train_commands  # noqa: F401  (registers train, evaluate)
from steelqc.cli import promotion_commands  # noqa: F401  (registers approve, reject, rollback, promotions)
from steelqc.cli import inspect_commands  # noqa: F401  (registers inspect, monitor)
from steelqc.cli import app_commands  # noqa: F401  (registers app)
from steelqc.cli import export_commands  # noqa: F401  (registers export)
# isort: on

__all__ = ["app"]
