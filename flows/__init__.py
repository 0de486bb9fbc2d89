"""Prefect flows: composition of ``tasks/`` only; no business logic lives here."""
