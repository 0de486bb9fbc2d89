"""Prefect flows: composition of ``tasks/`` only; no business logic lives here."""

# steelqc's environment defaults (telemetry off, state under the project) must be in place before
# Prefect reads its settings, which it does once, on import.
from steelqc.env import prepare_prefect_home

prepare_prefect_home()
