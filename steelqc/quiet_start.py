"""TensorFlow's start-up banner kept off the console of steelqc's entry points (the CLI and the app).

While ``import tensorflow`` runs, its C++ core logs a few INFO lines (oneDNN is on, CPU features, no CUDA
drivers) *before* its logging is initialised, so ``TF_CPP_MIN_LOG_LEVEL`` cannot hold them back. They
are the only lines removed: the import's stderr goes to a temporary file and everything else in it is
written back. A library user who imports :mod:`steelqc` gets TensorFlow's own behaviour.
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import os
import re
import sys
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from types import ModuleType

START_UP_NOISE = re.compile(
    rb"All log messages before absl::InitializeLog\(\) is called"
    rb"|port\.cc:\d+\] oneDNN custom operations are on"
    rb"|cpu_feature_guard\.cc:\d+\]|^To enable the following instructions:"
    rb"|cudart_stub\.cc:\d+\]|cuda_platform\.cc:\d+\] failed call to cuInit"
)


@contextmanager
def stderr_without(noise: re.Pattern[bytes]) -> Iterator[None]:
    """Capture file descriptor 2 (C++ writes there, not to ``sys.stderr``) and replay all but ``noise``."""
    sys.stderr.flush()
    try:
        saved = os.dup(2)
    except OSError:  # no stderr at all (a daemon): nothing to keep clean
        yield
        return
    with tempfile.TemporaryFile() as captured:
        os.dup2(captured.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            captured.seek(0)
            kept = [line for line in captured if not noise.search(line)]
            if kept:
                sys.stderr.write(b"".join(kept).decode(errors="replace"))
                sys.stderr.flush()


class _QuietImport(importlib.abc.MetaPathFinder):
    """Finds nothing itself: wraps the loader of ``tensorflow`` the first time it is imported, then leaves."""

    def find_spec(
        self, fullname: str, path: Sequence[str] | None, target: ModuleType | None = None
    ) -> importlib.machinery.ModuleSpec | None:
        if fullname != "tensorflow":
            return None
        sys.meta_path.remove(self)
        spec = importlib.machinery.PathFinder.find_spec(fullname, path)
        if spec is None or spec.loader is None:
            return spec
        loader = spec.loader
        load = loader.exec_module

        def exec_quietly(module: ModuleType) -> None:
            with stderr_without(START_UP_NOISE):
                load(module)

        loader.exec_module = exec_quietly  # type: ignore[method-assign]
        return spec


def quiet_tensorflow_start() -> None:
    """Install the wrapper before TensorFlow is imported (a no-op once it has been, or twice)."""
    if "tensorflow" in sys.modules or any(isinstance(f, _QuietImport) for f in sys.meta_path):
        return
    sys.meta_path.insert(0, _QuietImport())
