"""steelqc: visual inspection of steel strip, from validated data to a gated, monitored model."""

from steelqc.env import apply_default_environment

apply_default_environment()

__version__ = "0.1.0"
