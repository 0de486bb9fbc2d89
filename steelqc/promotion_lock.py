"""One promotion decision at a time per registered model: the check ("still pending", "champion unchanged") and
the move (aliases, approval tags) happen under one lock.

Processes sharing the embedded store share its state folder, so a file lock there serialises them. Clients of
a tracking server share no folder, only the registry, so they take a *registry claim*: a registered-model tag
written and re-read (Fischer's timed mutual exclusion). A claimant reads the tag, writes its own token when the
tag is free or expired, waits ``settle_s`` and re-reads: whoever wrote last owns it. Any rival that read the
tag as free wrote within ``settle_s`` (a write slower than that is not trusted, and retried), so after the wait
only one token can be there. The holder checks the tag again just before it moves anything
(:meth:`DecisionLock.confirm`); a claim left by a killed process expires after ``lease_s``.
"""

from __future__ import annotations

import logging
import random
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from filelock import FileLock, Timeout
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from steelqc.config import Settings
from steelqc.tracking import is_server_uri

CLAIM_TAG = "promotion_claim"  # "<token> <expiry, unix seconds>" on the registered model while a decision runs
WAIT_S = 60.0
LEASE_S = 60.0


class DecisionBusyError(RuntimeError):
    """Another decision on the same registered model holds the lock, or took the claim over: nothing changed."""


class DecisionLock:
    """What a decision holds; :meth:`confirm` right before writing (a file lock cannot be taken over)."""

    def confirm(self) -> None:
        return None


@dataclass
class RegistryClaim(DecisionLock):
    """A claim on ``model_name`` through its tag :data:`CLAIM_TAG` (see the module docstring)."""

    client: MlflowClient
    model_name: str
    settle_s: float
    lease_s: float = LEASE_S
    token: str = field(default_factory=lambda: uuid.uuid4().hex)

    def _holder(self) -> str | None:
        """The token of an unexpired claim, or None."""
        value = self.client.get_registered_model(self.model_name).tags.get(CLAIM_TAG, "")
        token, _, expiry = value.partition(" ")
        try:
            return token if token and float(expiry) > time.time() else None
        except ValueError:  # not written by this code: treat as free
            return None

    def acquire(self, wait_s: float = WAIT_S) -> None:
        deadline = time.monotonic() + wait_s
        while True:
            read_at = time.monotonic()
            if self._holder() in (None, self.token) and self._write_claim():
                if time.monotonic() - read_at < self.settle_s:  # a slower write may have crossed a rival's wait
                    time.sleep(self.settle_s)
                    if self._holder() == self.token:
                        return
            if time.monotonic() > deadline:
                raise DecisionBusyError(
                    f"another promotion decision on {self.model_name!r} has held the registry claim "
                    f"(model tag {CLAIM_TAG}) for over {wait_s:g} s; try again"
                )
            time.sleep(self.settle_s * random.uniform(0.5, 1.5))

    def _write_claim(self) -> bool:
        """Write our token; False when a rival's first claim won the same instant.

        The store keeps one row per (model, tag): two first claims at once are two INSERTs, and the database
        refuses the second (an MlflowException, e.g. SQLite's UNIQUE constraint behind a server's 400).
        """
        try:
            self.client.set_registered_model_tag(
                self.model_name, CLAIM_TAG, f"{self.token} {time.time() + self.lease_s:.3f}"
            )
        except MlflowException:
            if self._holder() in (None, self.token):
                raise
            return False
        return True

    def confirm(self) -> None:
        if self._holder() != self.token:
            raise DecisionBusyError(
                f"another promotion decision on {self.model_name!r} took the registry claim; nothing was changed, "
                "try again"
            )

    def release(self) -> None:
        """Remove the claim if it is still ours; if the registry cannot be reached it expires on its own."""
        try:
            if self._holder() == self.token:
                self.client.delete_registered_model_tag(self.model_name, CLAIM_TAG)
        except (MlflowException, OSError) as exc:  # requests' errors are OSErrors
            logging.getLogger(__name__).warning(
                "could not release the registry claim on %r (%s); it expires in %.0f s",
                self.model_name,
                exc,
                self.lease_s,
            )


@contextmanager
def decision_lock(settings: Settings, client: MlflowClient) -> Iterator[DecisionLock]:
    """Hold the lock of ``settings.tracking.registered_model`` for one check-and-move decision."""
    name = settings.tracking.registered_model
    if is_server_uri(settings.mlflow_tracking_uri):
        claim = RegistryClaim(client, name, settings.tracking.claim_settle_seconds)
        claim.acquire()
        try:
            yield claim
        finally:
            claim.release()
        return
    settings.state_dir.mkdir(parents=True, exist_ok=True)
    path = settings.state_dir / "promotion.lock"
    lock = FileLock(str(path))
    try:
        lock.acquire(timeout=WAIT_S)
    except Timeout:
        raise DecisionBusyError(f"another promotion decision has held {path} for over {WAIT_S:.0f} s") from None
    try:
        yield DecisionLock()
    finally:
        lock.release()
