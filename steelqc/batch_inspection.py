"""Inspect a file, a folder or an ``s3://`` prefix of strip images: one PASS / HOLD / FAIL row per image.

Images are read and decoded on a thread pool (OpenCV releases the GIL) while the model scores the
previous group, and the patches of ``batch_images`` images share model batches. A bad image (unreadable,
not an image, wrong size) becomes an ``ERROR`` row with its reason; it never stops the batch, because
one corrupt file must not leave a coil's other images uninspected.
"""

from __future__ import annotations

import csv
import heapq
import json
import math
import tempfile
import textwrap
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import cast

import cv2
import numpy as np
import pandas as pd
from sklearn.decomposition import PCA

from steelqc.batch_report import WORST_SHOWN, write_batch_report
from steelqc.config import PATCHES, STRIP
from steelqc.data.errors import DataError, DatasetError
from steelqc.data.images import DEFAULT_MAX_IMAGE_PIXELS, check_size, decode_image_bytes, encode_png
from steelqc.data.storage import LocalStorage, Storage, open_storage
from steelqc.inference import ImageResult, Inspector
from steelqc.monitoring import EmbeddingRecorder, PatchLog, patch_features, patch_frame
from steelqc.novelty import NOVEL_COLUMN, NOVELTY_COLUMN, outline_novel
from steelqc.patches import PadMode, extract_patches, ordered_parallel_map
from steelqc.pyfunc_io import NOVELTY_COLUMNS, result_record
from steelqc.thresholds import FAIL, HOLD, PASS

ERROR = "ERROR"
DECISION_COLUMNS = ("image", "decision", "worst_score", "worst_patch_y", "worst_patch_x", "patch_scores", "error")
#: Which model decided, with which thresholds and how, and when: the same on every row of a batch.
PROVENANCE_COLUMNS = ("decided_at", "model_uri", "model_version", "runtime", "mode", "t_pass", "t_fail")
OVERLAY_DIR = "overlays"
MAX_ERRORS_KEPT = 100  # ERROR rows a BatchResult carries for the summary; every one is in decisions.csv
PATCH_LOG_ROWS_PER_FILE = 5_000  # patch-log rows held in memory (~2 MiB) before they are staged to a local file


@dataclass(frozen=True)
class DecidedBy:
    """The model that decides a batch, as recorded beside every decision and on the batch report."""

    model_uri: str
    model_version: str | None = None
    runtime: str = "keras"
    card: Mapping[str, str] = field(default_factory=dict)  # the registered version's tags (metrics, lineage)


@dataclass
class BatchResult:
    """What one batch run decided and where it wrote it; the rows themselves are in the files, not here."""

    csv_path: Path
    json_path: Path
    images: int
    seconds: float
    counts: dict[str, int] = field(default_factory=dict)
    errors: list[tuple[str, str]] = field(default_factory=list)  # (image, reason): the first MAX_ERRORS_KEPT
    overlay_count: int = 0
    patch_log_files: list[str] = field(default_factory=list)
    report_path: Path | None = None

    @property
    def images_per_second(self) -> float:
        return self.images / self.seconds if self.seconds > 0 else math.inf

    @property
    def decisions(self) -> pd.DataFrame:
        """``decisions.csv`` read back (DECISION_COLUMNS + PROVENANCE_COLUMNS, one row per image, source order)."""
        return read_decisions(self.csv_path)

    @property
    def overlays(self) -> list[Path]:
        """The overlay files of this batch's HOLD and FAIL images, in source order."""
        flagged = self.decisions[self.decisions["decision"].isin([HOLD, FAIL])]
        return [overlay_path(self.csv_path.parent, str(name)) for name in flagged["image"]]


def read_decisions(csv_path: str | Path) -> pd.DataFrame:
    """A ``decisions.csv`` as written: an empty ``error`` (or ``reason``) is an empty string, versions are text."""
    frame = pd.read_csv(csv_path, dtype={"model_version": str, "model_uri": str, "error": str, "reason": str})
    text = [column for column in ("error", "reason", "model_uri") if column in frame]
    return frame.fillna(dict.fromkeys(text, "")).astype({"worst_patch_y": "Int64", "worst_patch_x": "Int64"})


def overlay_path(out_dir: Path, image: str) -> Path:
    return out_dir / OVERLAY_DIR / f"{image}.overlay.png"


@dataclass
class _Loaded:
    name: str
    pixels: np.ndarray | None
    error: str | None
    features: pd.DataFrame | None = None  # patch features for the log, computed on the loader thread


def list_images(source: str | Path, endpoint_url: str | None = None) -> tuple[Storage, list[str]]:
    """The storage holding ``source`` and the names of the images to inspect, sorted.

    ``source`` is one file, a folder (its files, not sub-folders) or an ``s3://`` object or prefix.
    Every file is listed, whatever its extension: one that is not an image becomes an ERROR row.
    """
    text = str(source)
    if text.startswith("s3://"):
        storage = open_storage(text, endpoint_url)
        bucket_path = text.removeprefix("s3://")
        if "/" in bucket_path.strip("/") and not text.endswith("/") and storage.exists(""):
            parent, _, name = text.rpartition("/")
            storage, names = open_storage(parent, endpoint_url), [name]
        else:
            names = storage.list_files("")
    else:
        path = Path(text).expanduser()
        if path.is_file():  # a file named on its own is read wherever its symlink points
            path = path.resolve()
            storage, names = LocalStorage(path.parent), [path.name]
        elif path.is_dir():
            storage, names = LocalStorage(path), LocalStorage(path).list_files("")
        else:
            raise DatasetError("no such file or folder", file=text)
    if not names:
        raise DatasetError("no files to inspect", file=text)
    return storage, names


def _load(
    storage: Storage,
    name: str,
    image_size: tuple[int, int] | None,
    geometry: tuple[int, int, PadMode] | None,
    max_pixels: int,
) -> _Loaded:
    """Read and decode one image; with ``geometry`` (size, stride, pad mode) also its patch features,
    on the same grid the Inspector uses, so this work overlaps with the model instead of following it."""
    where = f"{storage.uri}/{name}"
    try:
        pixels = decode_image_bytes(storage.read_bytes(name), name=where, max_pixels=max_pixels).pixels
        if image_size is not None:
            check_size(pixels, *image_size, name=where)
    except DataError as exc:
        return _Loaded(name, None, exc.reason)
    except OSError as exc:  # unreadable (permissions, I/O error): an ERROR row, not a stopped batch
        return _Loaded(name, None, f"cannot read the file: {exc.strerror or exc}")
    features = patch_features(extract_patches(pixels, *geometry)[0]) if geometry is not None else None
    return _Loaded(name, pixels, None, features)


def _groups(items: Iterator[_Loaded], size: int) -> Iterator[list[_Loaded]]:
    group: list[_Loaded] = []
    for item in items:
        group.append(item)
        if len(group) >= size:
            yield group
            group = []
    if group:
        yield group


def heatmap_overlay(pixels: np.ndarray, result: ImageResult, patch_size: int) -> np.ndarray:
    """BGR image: the strip with each pixel tinted by the highest score of the patches covering it.

    The worst patch is outlined, so a reviewer sees at once where the model looked.
    """
    heat = np.zeros(pixels.shape, np.float32)
    for (y, x), score in zip(result.positions, result.patch_scores, strict=True):
        window = heat[y : y + patch_size, x : x + patch_size]
        np.maximum(window, np.float32(score), out=window)
    colour = cv2.applyColorMap(np.rint(heat * 255).astype(np.uint8), cv2.COLORMAP_JET)
    overlay = cv2.addWeighted(cv2.cvtColor(pixels, cv2.COLOR_GRAY2BGR), 0.6, colour, 0.4, 0)
    y, x = result.worst_patch
    bottom_right = (min(x + patch_size, pixels.shape[1]) - 1, min(y + patch_size, pixels.shape[0]) - 1)
    cv2.rectangle(overlay, (x, y), bottom_right, (255, 255, 255), 2)
    if result.novel is not None:
        outline_novel(overlay, result.positions, result.novel, patch_size)
    label = f"{result.decision} {result.worst_score:.3f}" + (f" {result.reason}" if result.reason else "")
    cv2.putText(overlay, label, (x + 4, y + 20), cv2.FONT_HERSHEY_SIMPLEX, 0.6, (255, 255, 255), 2)
    return overlay


def _error_row(item: _Loaded) -> dict[str, object]:
    return {"image": item.name, "decision": ERROR, "worst_score": np.nan, "worst_patch_y": pd.NA,
            "worst_patch_x": pd.NA, "patch_scores": "[]", "error": item.error}  # fmt: skip


def inspect_batch(
    inspector: Inspector,
    source: str | Path,
    out_dir: str | Path,
    *,
    workers: int = 4,
    batch_images: int = 8,
    patch_log: PatchLog | None = None,
    reducer: PCA | None = None,
    image_size: tuple[int, int] | None = None,
    endpoint_url: str | None = None,
    model_version: str | None = None,
    max_image_pixels: int = DEFAULT_MAX_IMAGE_PIXELS,
    progress: Callable[[int, int], None] | None = None,
    decided_by: DecidedBy | None = None,
) -> BatchResult:
    """Decide on every image under ``source``; write ``decisions.csv``, ``decisions.json``, overlays and
    ``report.html`` (counts, the worst images, the model card).

    ``image_size`` (height, width) makes other sizes ERROR rows, as does an image over ``max_image_pixels``
    (refused before decoding, whatever ``image_size`` says). With a ``patch_log`` every inspected
    patch is appended with its features and score, and with a ``reducer`` also its reduced embedding,
    taken from the same forward pass; ``model_version`` is recorded on each logged row so monitoring
    compares a version only with its own reference. ``decided_by`` names the model on every row and in the
    report. ``progress(done, total)`` is called after each group
    of images with the number of images just finished and the total.

    Memory stays bounded on any number of images: at most ``2 × workers`` images are decoded ahead of
    the model, ``batch_images`` are scored at a time, and each group's decisions are written out before the
    next is scored. Patch-log rows are staged to local parquet files and appended to the log only once the
    decision files are in place, so a run that fails before then logs nothing (and its retry logs once).
    """
    if workers < 1 or batch_images < 1:
        raise ValueError("workers and batch_images must be at least 1")
    started, decided_at = time.perf_counter(), datetime.now(UTC).isoformat(timespec="seconds")
    storage, names = list_images(source, endpoint_url)
    out = Path(out_dir)
    (out / OVERLAY_DIR).mkdir(parents=True, exist_ok=True)
    # patch mode records embeddings from the same forward pass; strip mode's head computes them anyway
    want_embeddings = patch_log is not None and reducer is not None
    recorder = EmbeddingRecorder(inspector.model) if want_embeddings and inspector.mode == PATCHES else None
    scorer = (
        Inspector(recorder, inspector.thresholds, inspector.patch_size, inspector.stride, inspector.pad_mode,
                  batch_size=inspector.batch_size, novelty=inspector.novelty)  # fmt: skip
        if recorder is not None
        else inspector
    )
    columns = [*DECISION_COLUMNS, *map(str, NOVELTY_COLUMNS)] if inspector.novelty is not None else [*DECISION_COLUMNS]
    summary = _Summary()
    geometry = (inspector.patch_size, inspector.stride, inspector.pad_mode) if patch_log is not None else None
    loaded = ordered_parallel_map(
        lambda name: _load(storage, name, image_size, geometry, max_image_pixels), names, workers
    )
    with _StagedPatchLog(patch_log) as staged:
        with _DecisionFiles(out, columns, _provenance(decided_by, inspector, decided_at)) as files:
            for group in _groups(loaded, batch_images):
                good = [item for item in group if item.pixels is not None]
                results = scorer.inspect([item.pixels for item in good if item.pixels is not None])
                embeddings = recorder.take() if recorder is not None else None
                if want_embeddings and inspector.mode == STRIP and results:
                    embeddings = np.concatenate([r.embeddings for r in results if r.embeddings is not None])
                if patch_log is not None:
                    frame = _log_frame(good, results, embeddings, reducer)
                    staged.add(frame.assign(model_version=model_version) if model_version is not None else frame)
                rows: list[dict[str, object]] = []
                in_order = iter(results)
                for item in group:
                    if item.pixels is None:
                        rows.append(_error_row(item))
                        continue
                    result = next(in_order)
                    rows.append({"image": item.name, **result_record(result), "error": ""})
                    if result.decision in (HOLD, FAIL):
                        path = overlay_path(out, item.name)
                        path.write_bytes(encode_png(heatmap_overlay(item.pixels, result, inspector.patch_size)))
                summary.add(files.write(rows))
                if progress is not None:
                    progress(len(group), len(names))
        # Appended once the decisions are in place: a run that fails before here logged nothing. Up to
        # PATCH_LOG_ROWS_PER_FILE rows this is one file; a larger batch interrupted while appending (storage
        # gone) can leave its first parts logged.
        log_files = staged.commit()
    shown = summary.shown()
    overlays = {str(r.image): overlay_path(out, str(r.image)) for r in shown.itertuples() if r.decision in (HOLD, FAIL)}
    report = write_batch_report(shown, summary.counts, overlays, out, decided_by.card if decided_by else None)
    return BatchResult(
        files.csv_path, files.json_path, len(names), time.perf_counter() - started, summary.counts,
        summary.errors, summary.flagged, log_files, report,
    )  # fmt: skip


class _Summary:
    """What a batch keeps of its rows while they stream to disk: counts, the first ERROR rows, the worst images."""

    def __init__(self) -> None:
        self.counts = {k: 0 for k in (PASS, HOLD, FAIL, ERROR)}
        self.flagged = 0
        self._errors: list[dict[str, object]] = []
        self._worst: list[tuple[float, int, dict[str, object]]] = []  # min-heap of the WORST_SHOWN highest scores
        self._seen = 0

    def add(self, rows: Sequence[dict[str, object]]) -> None:
        for row in rows:
            decision = str(row["decision"])
            self.counts[decision] += 1
            self.flagged += decision in (HOLD, FAIL)
            self._seen += 1
            if decision == ERROR:
                if len(self._errors) < MAX_ERRORS_KEPT:
                    self._errors.append(row)
                continue
            entry = (float(cast(float, row["worst_score"])), -self._seen, row)  # ties: the earlier image ranks higher
            if len(self._worst) < WORST_SHOWN:
                heapq.heappush(self._worst, entry)
            else:
                heapq.heappushpop(self._worst, entry)

    @property
    def errors(self) -> list[tuple[str, str]]:
        return [(str(row["image"]), str(row["error"])) for row in self._errors]

    def shown(self) -> pd.DataFrame:
        """The rows a report lists: the highest-scoring images first, then the kept ERROR rows."""
        worst = [row for *_, row in sorted(self._worst, key=lambda entry: entry[:2], reverse=True)]
        return pd.DataFrame([*worst, *self._errors])


class _DecisionFiles:
    """``decisions.csv`` and ``decisions.json`` written a group of rows at a time under temporary names, and
    put in place only when the batch completes: a failed batch leaves the previous run's files as they were."""

    def __init__(self, out: Path, columns: Sequence[str], provenance: Mapping[str, object]) -> None:
        self.csv_path, self.json_path = out / "decisions.csv", out / "decisions.json"
        self.columns, self.provenance = [*columns, *provenance], provenance
        self._partial = {path: path.with_name(path.name + ".partial") for path in (self.csv_path, self.json_path)}
        self._rows = 0

    def __enter__(self) -> _DecisionFiles:
        self._csv_file = self._partial[self.csv_path].open("w", newline="", encoding="utf-8")
        self._csv = csv.writer(self._csv_file)
        self._csv.writerow(self.columns)
        self._json = self._partial[self.json_path].open("w", encoding="utf-8")
        self._json.write("[")
        return self

    def write(self, rows: Sequence[dict[str, object]]) -> list[dict[str, object]]:
        """Append ``rows`` to both files; the rows as written (every column, the batch's provenance included)."""
        written = []
        for row in rows:
            record = {column: _missing_as_none(row.get(column)) for column in self.columns}
            record.update(self.provenance)
            self._csv.writerow(["" if value is None else value for value in record.values()])
            as_json = {**record, "patch_scores": json.loads(str(record["patch_scores"]))}
            separator = "\n" if self._rows == 0 else ",\n"
            self._json.write(separator + textwrap.indent(json.dumps(as_json, indent=2, default=int), "  "))
            self._rows += 1
            written.append(record)
        return written

    def __exit__(self, kind: type[BaseException] | None, *_: object) -> None:
        self._json.write("\n]" if self._rows else "]")
        self._csv_file.close()
        self._json.close()
        for final, partial in self._partial.items():
            if kind is None:
                partial.replace(final)
            else:
                partial.unlink(missing_ok=True)


def _missing_as_none(value: object) -> object:
    """None for a missing value (NaN, pd.NA), so CSV writes an empty cell and JSON null."""
    return None if value is None or value is pd.NA or (isinstance(value, float) and math.isnan(value)) else value


class _StagedPatchLog:
    """Patch-log rows held back until the batch completes: in memory up to :data:`PATCH_LOG_ROWS_PER_FILE`
    rows, beyond that in local parquet files, appended to the log (one file each) by :meth:`commit`."""

    def __init__(self, log: PatchLog | None) -> None:
        self.log = log
        self._held: list[pd.DataFrame] = []
        self._staged: list[Path] = []
        self._folder: tempfile.TemporaryDirectory[str] | None = None  # made at the first staging

    def __enter__(self) -> _StagedPatchLog:
        return self

    def add(self, frame: pd.DataFrame) -> None:
        if frame.empty:
            return
        self._held.append(frame)
        if sum(len(f) for f in self._held) >= PATCH_LOG_ROWS_PER_FILE:
            self._stage()

    def _stage(self) -> None:
        if self._folder is None:
            self._folder = tempfile.TemporaryDirectory(prefix="steelqc-patch-log-")
        path = Path(self._folder.name) / f"part-{len(self._staged):05d}.parquet"
        pd.concat(self._held, ignore_index=True).to_parquet(path, index=False)
        self._staged.append(path)
        self._held = []

    def commit(self) -> list[str]:
        """Append every staged row to the log; the files written there."""
        if self.log is None:
            return []
        if self._held:
            self._stage()
        written = [self.log.append(pd.read_parquet(path)) for path in self._staged]
        return [uri for uri in written if uri is not None]

    def __exit__(self, *_: object) -> None:
        if self._folder is not None:
            self._folder.cleanup()


def _provenance(decided_by: DecidedBy | None, inspector: Inspector, decided_at: str) -> dict[str, object]:
    """The :data:`PROVENANCE_COLUMNS` of a batch (model fields empty when the caller named no model)."""
    return {
        "decided_at": decided_at,
        "model_uri": decided_by.model_uri if decided_by else "",
        "model_version": (decided_by.model_version or "") if decided_by else "",
        "runtime": decided_by.runtime if decided_by else "",
        "mode": inspector.mode,  # patches | strip: how the Inspector scored
        "t_pass": inspector.thresholds.t_pass,
        "t_fail": inspector.thresholds.t_fail,
    }


def _log_frame(
    items: Sequence[_Loaded], results: Sequence[ImageResult], embeddings: np.ndarray | None, reducer: PCA | None
) -> pd.DataFrame:
    """Patch-log rows of one group of images, in the Inspector's patch order."""
    if not items:
        return pd.DataFrame()
    frame = patch_frame(
        pd.concat([item.features for item in items], ignore_index=True),
        np.concatenate([r.patch_scores for r in results]),
        embeddings=embeddings,
        reducer=reducer,
        images=[item.name for item, r in zip(items, results, strict=True) for _ in r.positions],
        positions=[pos for r in results for pos in r.positions],
    )
    if results and all(r.patch_novelty is not None for r in results):  # the novelty guard's share is monitored
        frame[NOVELTY_COLUMN] = np.concatenate([r.patch_novelty for r in results if r.patch_novelty is not None])
        frame[NOVEL_COLUMN] = np.concatenate([r.novel for r in results if r.novel is not None])
    return frame
