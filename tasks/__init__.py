"""Prefect task wrappers around ``steelqc`` library calls (retries, caching, persisted results)."""

# steelqc's environment defaults must be in place before Prefect reads its settings on import.
from steelqc.env import prepare_prefect_home

prepare_prefect_home()
