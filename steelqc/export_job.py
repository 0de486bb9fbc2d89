"""Export a registered version to a faster runtime, accepted only after a parity check on its own validation images.

Both runtimes inspect the same whole images of the version's validation split (read through the patch index
and dataset its training run recorded, tags ``work_dir`` and ``dataset_source``) with the version's own
thresholds, in the version's inference mode (a strip-mode version exports its backbone for any image size).
The export passes when every patch score is within ``tolerance`` of the Keras score and every PASS / HOLD /
FAIL decision is the same; only then is it stored in the version's model, beside the Keras
file, where the pyfunc finds it. Either way the outcome is written on the version as ``export.<format>.*`` tags.
"""

from __future__ import annotations

import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from importlib.metadata import version as package_version
from pathlib import Path

import numpy as np
from mlflow.entities.model_registry import ModelVersion
from mlflow.tracking import MlflowClient

from steelqc.config import Settings
from steelqc.data.dataset import Dataset
from steelqc.inference import ImageResult, Inspector
from steelqc.patches import read_index
from steelqc.pyfunc import load_inspector, takes_runtime_setting
from steelqc.registry import registered_version
from steelqc.runtimes import EXPORTS_DIR, export_runtime, load_runtime, read_manifest, write_manifest
from steelqc.train_job import split_rows

PARITY_TOLERANCE = 1e-4
PARITY_IMAGES = 32
PASSED, FAILED = "passed", "failed"
RUNTIME_PACKAGES = {"openvino": "openvino", "onnx": "onnxruntime"}


class ExportError(RuntimeError):
    """The model cannot be exported as asked (not a registered version, no validation data, done already)."""


@dataclass(frozen=True)
class Parity:
    """How an exported runtime's results compare with the Keras model's on the same images."""

    images: int
    patches: int
    max_abs_diff: float
    differing_decisions: int  # patches whose PASS / HOLD / FAIL differs
    tolerance: float

    @property
    def passed(self) -> bool:
        return self.patches > 0 and self.max_abs_diff <= self.tolerance and self.differing_decisions == 0

    @property
    def reason(self) -> str | None:
        """Why the check failed, in one line; None when it passed."""
        problems = []
        if self.patches == 0:
            problems.append("no validation patches to compare")
        if self.max_abs_diff > self.tolerance:
            problems.append(f"max |score difference| {self.max_abs_diff:.2e} > {self.tolerance:g}")
        if self.differing_decisions:
            problems.append(f"{self.differing_decisions} of {self.patches} patch decisions differ")
        return "; ".join(problems) or None

    def record(self) -> dict[str, object]:
        return {"passed": self.passed, "images": self.images, "patches": self.patches,
                "max_abs_diff": self.max_abs_diff, "differing_decisions": self.differing_decisions,
                "tolerance": self.tolerance}  # fmt: skip


def compare_results(reference: Sequence[ImageResult], candidate: Sequence[ImageResult], tolerance: float) -> Parity:
    """Parity of ``candidate`` with ``reference``, image by image and patch by patch."""
    if len(reference) != len(candidate):
        raise ValueError(f"{len(reference)} reference results but {len(candidate)} candidate results")
    pairs = list(zip(reference, candidate, strict=True))
    diffs = np.concatenate([np.abs(r.patch_scores - c.patch_scores) for r, c in pairs] or [np.empty(0)])
    differing = sum(int(np.sum(r.patch_decisions != c.patch_decisions)) for r, c in pairs)
    max_diff = float(np.max(diffs)) if diffs.size else 0.0
    # a NaN score never passes: NaN compares False with the tolerance
    return Parity(len(pairs), int(diffs.size), max_diff if np.isfinite(max_diff) else np.inf, differing, tolerance)


def parity_tags(fmt: str, parity: Parity, stored_at: str | None, mode: str) -> dict[str, str]:
    """The ``export.<format>.*`` tags of one check; ``path`` (inside the model) only when it passed."""
    prefix = f"export.{fmt}."
    tags = {
        "parity": PASSED if parity.passed else FAILED,
        "max_abs_diff": f"{parity.max_abs_diff:.3e}",
        "differing_decisions": str(parity.differing_decisions),
        "images": str(parity.images),
        "patches": str(parity.patches),
        "tolerance": f"{parity.tolerance:g}",
        "mode": mode,
        "runtime_version": f"{RUNTIME_PACKAGES[fmt]} {package_version(RUNTIME_PACKAGES[fmt])}",
        **({"path": stored_at} if stored_at else {"reason": parity.reason or ""}),
    }
    return {prefix + key: value for key, value in tags.items()}


@dataclass(frozen=True)
class ExportResult:
    name: str
    version: str
    fmt: str
    parity: Parity
    stored_at: str | None  # the export's folder inside the model; None when the check failed


def logged_model_id(version: ModelVersion) -> str | None:
    """The MLflow 3 logged model behind a version: SQL registries leave ``model_id`` empty, the source names it."""
    source = version.source or ""
    return version.model_id or (source.removeprefix("models:/") if source.startswith("models:/m-") else None)


def validation_images(run_id: str, settings: Settings, max_images: int) -> list[np.ndarray]:
    """Up to ``max_images`` whole images of the validation split the run's model was chosen on."""
    tags = MlflowClient().get_run(run_id).data.tags
    if "work_dir" not in tags or "dataset_source" not in tags:
        raise ExportError(f"run {run_id} records no work_dir/dataset_source tags: its validation images are unknown")
    # run_training_job writes the index there: the split the thresholds were chosen on
    rows = split_rows(read_index(Path(tags["work_dir"]) / "patch_index.parquet"), "val")
    if rows.empty:
        raise ExportError(f"run {run_id}'s patch index has no validation patches")
    dataset = Dataset.configured(tags["dataset_source"], settings.data)
    return [dataset.load_image(str(image_id)) for image_id in rows["image_id"].unique()[:max_images]]


def export_version(
    model_uri: str,
    fmt: str,
    settings: Settings,
    *,
    max_images: int = PARITY_IMAGES,
    tolerance: float = PARITY_TOLERANCE,
) -> ExportResult:
    """Export the version behind ``model_uri`` as ``fmt``; stored with it only if the parity check passes."""
    version = registered_version(model_uri)
    model_id = logged_model_id(version) if version is not None else None
    if version is None or model_id is None:
        raise ExportError(
            f"{model_uri} is not a registered version: use models:/<name>/<version> or models:/<name>@<alias>"
        )
    if not takes_runtime_setting(model_uri):
        raise ExportError(
            f"{version.name} v{version.version} was logged before exports (its pyfunc takes no runtime setting, "
            "so it would never use one): register a newly logged model to export it"
        )
    if version.tags.get(f"export.{fmt}.parity") == PASSED:
        raise ExportError(f"{version.name} v{version.version} already has an {fmt} export that passed its parity check")
    images = validation_images(str(version.run_id), settings, max_images)
    keras_inspector, _ = load_inspector(model_uri)
    with tempfile.TemporaryDirectory(prefix="steelqc-export-") as tmp:
        folder = export_runtime(keras_inspector.model, fmt, Path(tmp) / fmt, mode=keras_inspector.mode)
        exported = Inspector(
            load_runtime(folder), keras_inspector.thresholds, keras_inspector.patch_size,
            keras_inspector.stride, keras_inspector.pad_mode, batch_size=keras_inspector.batch_size,
            mode=keras_inspector.mode,
        )  # fmt: skip
        parity = compare_results(keras_inspector.inspect(images), exported.inspect(images), tolerance)
        client = MlflowClient()
        stored_at = None
        if parity.passed:
            write_manifest(folder, {**read_manifest(folder), "parity": parity.record()})
            stored_at = f"artifacts/{EXPORTS_DIR}/{fmt}"  # beside artifacts/model.keras
            client.log_model_artifacts(model_id, str(folder), stored_at)
    for key, value in parity_tags(fmt, parity, stored_at, keras_inspector.mode).items():
        client.set_model_version_tag(version.name, str(version.version), key, value)
    return ExportResult(version.name, str(version.version), fmt, parity, stored_at)
