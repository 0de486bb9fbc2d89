"""Prefect task wrappers around ``steelqc`` library calls (retries, caching, persisted results)."""
