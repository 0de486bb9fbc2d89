"""MLflow tracking and registry: where runs go, what a run records, and the decision-making pyfunc model.

A registered version is self-contained: the Keras model, its thresholds and its patch geometry travel
together inside one pyfunc, so ``mlflow.pyfunc.load_model("models:/steelqc@champion")`` and
``mlflow models serve`` return decisions, not raw scores, and a model can never be paired with another
model's thresholds. Aliases (``champion``, ``previous-champion``) name versions; stages are not used.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import os
import subprocess
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.error import HTTPError, URLError
from urllib.parse import urlparse
from urllib.request import urlopen

import mlflow
import numpy as np
import pandas as pd
from mlflow.data.dataset_source import DatasetSource
from mlflow.data.pandas_dataset import from_pandas
from mlflow.entities.model_registry import ModelVersion
from mlflow.exceptions import MlflowException
from mlflow.models import ModelSignature, get_model_info
from mlflow.models.model import MODEL_CONFIG, ModelInfo
from mlflow.pyfunc import PythonModel, PythonModelContext
from mlflow.tracking import MlflowClient
from mlflow.types import ColSpec, Schema

import steelqc
from steelqc.config import PATCHES, InferenceMode, PatchSettings, Settings, TrackingSettings
from steelqc.data.errors import ImageDecodeError
from steelqc.runtimes import AUTO, EXPORTS_DIR, KERAS, ExportedModel, choose_runtime
from steelqc.strip import StripModel
from steelqc.thresholds import Thresholds

# steelqc.inference brings TensorFlow: it loads where a model is used, so the QA commands (promotion) can use
# the experiment helpers here and start in seconds.
if TYPE_CHECKING:
    from steelqc.inference import ImageResult, Inspector

PROJECT_ROOT = Path(steelqc.__file__).resolve().parents[1]
SERVER_SCHEMES = {"http", "https", "databricks"}
MODEL_NAME_IN_RUN = "model"
RUNTIME_CONFIG_KEY = "runtime"
# Short by default so an unreachable server fails in seconds, not after MLflow's 7 retries with backoff.
HTTP_DEFAULTS = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2", "MLFLOW_HTTP_REQUEST_TIMEOUT": "30"}
REACHABILITY_TIMEOUT_S = 5.0
# Packages the pyfunc imports (steelqc's inference path); explicit because inference takes ~7 s.
PYFUNC_PACKAGES = (
    "mlflow",
    "tensorflow",
    "keras",
    "numpy",
    "pandas",
    "scipy",
    "scikit-learn",
    "opencv-python-headless",
    "pillow",  # image headers, read before decoding (the pixel budget)
    "simplejpeg",  # strict JPEG decoding
    "pydantic",
    "pydantic-settings",
    "pyyaml",
    "openvino",  # the exported runtimes (steelqc export); a serving environment without them scores with Keras
    "onnxruntime",
)
OUTPUT_SIGNATURE = Schema(
    [
        ColSpec("string", "decision"),
        ColSpec("double", "worst_score"),
        ColSpec("long", "worst_patch_y"),
        ColSpec("long", "worst_patch_x"),
        ColSpec("string", "patch_scores"),
    ]
)
VERSION_TAGS = ("recall", "recall_bound", "precision", "specificity", "t_pass", "t_fail", "data_hash", "git_commit")
# Image-level test metrics tagged beside the patch-level ones: a coil is passed or stopped per image.
IMAGE_METRIC_TAGS = ("image_recall", "image_precision", "image_specificity")


class TrackingUnavailableError(RuntimeError):
    """The configured MLflow tracking server cannot be reached."""


# --- where runs go -----------------------------------------------------------------------------------


def is_server_uri(uri: str) -> bool:
    """True for a tracking server (it owns artefact storage); False for a local database or folder."""
    return urlparse(uri).scheme in SERVER_SCHEMES


def configure_tracking(settings: Settings) -> str:
    """Point MLflow at ``settings.mlflow_tracking_uri`` and fail fast if it is a server that is down.

    The URI is an explicit setting, else ``$MLFLOW_TRACKING_URI``, else SQLite in the state dir.
    """
    uri = settings.mlflow_tracking_uri
    if is_server_uri(uri):
        for key, value in HTTP_DEFAULTS.items():
            os.environ.setdefault(key, value)
        if urlparse(uri).scheme != "databricks":
            _check_reachable(uri)
    elif uri.startswith("sqlite:///"):
        Path(uri.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    return uri


def _check_reachable(uri: str) -> None:
    try:
        with urlopen(f"{uri.rstrip('/')}/health", timeout=REACHABILITY_TIMEOUT_S):
            return
    except HTTPError:  # the server answered (auth, proxy, old version): it is reachable
        return
    except (URLError, OSError) as exc:
        raise TrackingUnavailableError(
            f"MLflow tracking server {uri} is unreachable ({exc}). Start it, fix "
            "MLFLOW_TRACKING_URI / tracking.tracking_uri, or unset both to use the embedded SQLite store."
        ) from exc


def experiment_name(tracking: TrackingSettings, subject: str) -> str:
    """``<prefix>-<subject>``: one experiment per dataset, plus ``monitoring`` and ``promotions``."""
    return f"{tracking.experiment_prefix}-{subject}"


def ensure_experiment(settings: Settings, subject: str) -> str:
    """The id of experiment :func:`experiment_name`, created on first use; the one place experiments are made.

    A local store (SQLite, a folder) keeps the artefacts under the state dir; a server decides where they go.
    """
    client = MlflowClient(tracking_uri=settings.mlflow_tracking_uri)
    name = experiment_name(settings.tracking, subject)
    existing = client.get_experiment_by_name(name)
    if existing is not None:
        return existing.experiment_id
    artifact_location = None
    if not is_server_uri(settings.mlflow_tracking_uri):
        artifact_location = (settings.mlflow_artifact_root / name).as_uri()
    try:
        return client.create_experiment(name, artifact_location=artifact_location)
    except MlflowException:  # created concurrently by another run
        found = client.get_experiment_by_name(name)
        if found is None:
            raise
        return found.experiment_id


# --- what a run records ------------------------------------------------------------------------------


def flatten_settings(settings: Settings) -> dict[str, str]:
    """The full configuration as ``section.field`` → string, ready for ``mlflow.log_params``."""
    flat: dict[str, str] = {}

    def walk(prefix: str, value: Any) -> None:
        if isinstance(value, dict):
            for key, item in value.items():
                walk(f"{prefix}.{key}" if prefix else str(key), item)
        else:
            flat[prefix] = json.dumps(value) if isinstance(value, (list, dict)) else str(value)

    walk("", settings.model_dump(mode="json"))
    return flat


def log_epoch_metrics(epoch: int, logs: Mapping[str, Any]) -> None:
    """Log one epoch's numeric Keras logs at step ``epoch`` (training's ``on_epoch_end`` callback)."""
    numeric = {key: float(value) for key, value in logs.items() if isinstance(value, (int, float, np.number))}
    if numeric:
        mlflow.log_metrics(numeric, step=int(epoch))


def dataset_source(root: str) -> DatasetSource:
    """Where a dataset lives, declared: MLflow's guess from a bare local path is ambiguous (and says so)."""
    # registered at import: mlflow.data makes one class per artifact repository, which mypy cannot see
    from mlflow.data.sources import LocalArtifactDatasetSource, S3ArtifactDatasetSource  # type: ignore[attr-defined]

    return S3ArtifactDatasetSource(root) if root.startswith("s3://") else LocalArtifactDatasetSource(root)


def log_lineage(
    data_hash: str, validation_summary: Mapping[str, Any], index: pd.DataFrame, source: str, dataset_name: str
) -> None:
    """Record what the run was trained on: data hash and validation summary as tags, the patch index as input.

    The logged dataset declares the index's integer columns as doubles, as MLflow advises: its schema is
    inferred from the frame and warns about integer columns otherwise (the index has no missing values).
    """
    tags = {"data_hash": data_hash, "dataset": dataset_name, "dataset_source": source}
    tags.update({f"validation.{k}": str(v) for k, v in validation_summary.items() if not isinstance(v, (list, dict))})
    mlflow.set_tags(tags)
    mlflow.log_dict(dict(validation_summary), "validation/summary.json")
    as_doubles = index.astype({column: "float64" for column in index.select_dtypes("integer").columns})
    patch_dataset = from_pandas(
        as_doubles, source=dataset_source(source), targets="label", name=f"{dataset_name}-patches"
    )
    mlflow.log_input(patch_dataset, context="training", tags={"data_hash": data_hash})


def log_evaluation(metrics: Mapping[str, float], report_json: str, plots: Sequence[str | Path]) -> None:
    """The test-split metrics, the full report and its plots on the active run."""
    mlflow.log_metrics({k: float(v) for k, v in metrics.items() if v is not None and np.isfinite(v)})
    mlflow.log_text(report_json, "evaluation/report.json")
    for plot in plots:
        mlflow.log_artifact(str(plot), "evaluation/plots")


# --- the decision-making pyfunc ----------------------------------------------------------------------


def geometry_of(patches: PatchSettings, mode: InferenceMode = PATCHES) -> dict[str, Any]:
    """The patch geometry a model was trained with and the mode its thresholds were chosen in; inference must
    score the same way."""
    return {"patch_size": patches.size, "stride": patches.stride, "pad_mode": patches.pad_mode, "mode": mode}


def images_from_model_input(model_input: Any) -> list[np.ndarray]:
    """Images from what a pyfunc caller or ``mlflow models serve`` passes in.

    Accepts a DataFrame (or dict) with an ``image`` column of encoded bytes, base64 text of them (JSON
    serving) or pixel arrays; a list of those; or an array of images ``(H,W)``, ``(N,H,W)``, ``(N,H,W,C)``.
    """
    if isinstance(model_input, pd.DataFrame) or isinstance(model_input, dict):
        if "image" not in model_input:
            raise ImageDecodeError("model input needs a column named 'image'", file="model input")
        column = model_input["image"]
        # a dict may carry one image as a scalar; iterating it would yield its bytes or characters
        items = [column] if isinstance(column, (str, bytes, bytearray)) else list(column)
    elif isinstance(model_input, np.ndarray) and model_input.dtype != object:
        if model_input.ndim == 2:
            items = [model_input]
        elif model_input.ndim in (3, 4):
            items = list(model_input)
        else:
            raise ImageDecodeError(f"image array of shape {model_input.shape} (expected 2-4 dims)", file="model input")
    else:
        items = list(model_input)
    from steelqc.inference import decode_inputs

    return decode_inputs([_item_bytes_or_array(item, i) for i, item in enumerate(items)])


def _item_bytes_or_array(item: Any, i: int) -> bytes | np.ndarray:
    if isinstance(item, str):
        try:
            return base64.b64decode("".join(item.split()), validate=True)  # MLflow wraps base64 at 76 chars
        except binascii.Error:
            raise ImageDecodeError("text input is not base64-encoded image bytes", file=f"input[{i}]") from None
    if isinstance(item, (list, tuple)):
        return np.asarray(item)
    return item


RESULT_COLUMNS = tuple(spec.name for spec in OUTPUT_SIGNATURE.inputs)


def result_record(result: ImageResult) -> dict[str, Any]:
    """One image's output row (:data:`RESULT_COLUMNS`); plain dict so per-image callers build no DataFrame."""
    return {
        "decision": result.decision,
        "worst_score": result.worst_score,
        "worst_patch_y": result.worst_patch[0],
        "worst_patch_x": result.worst_patch[1],
        "patch_scores": json.dumps(
            [
                {"y": y, "x": x, "score": round(float(s), 6), "decision": str(d)}
                for (y, x), s, d in zip(result.positions, result.patch_scores, result.patch_decisions, strict=True)
            ]
        ),
    }


def results_frame(results: Sequence[ImageResult]) -> pd.DataFrame:
    """One row per image: decision, worst score and patch, and every patch's score as JSON."""
    return pd.DataFrame([result_record(r) for r in results], columns=list(RESULT_COLUMNS))


class SteelQCModel(PythonModel):
    """Pyfunc: images in, one decision per image out (thresholds and patch geometry travel inside).

    ``model_config={"runtime": ...}`` picks what scores: ``auto`` (default) an export stored with the model
    (``steelqc export``, stored only after its parity check passed), else Keras; ``keras``; or a named export.
    """

    inspector: Inspector
    runtime: str = KERAS
    runtime_note: str | None = None  # why Keras (or a second choice) scores when an export was wanted

    def load_context(self, context: PythonModelContext) -> None:
        keras_path = Path(context.artifacts["keras_model"])
        # a model logged without a runtime config predates exports and must not pick one up: Keras
        requested = (context.model_config or {}).get(RUNTIME_CONFIG_KEY, KERAS)
        mode = json.loads(Path(context.artifacts["geometry"]).read_text()).get("mode", PATCHES)
        exported, self.runtime_note = choose_runtime(keras_path.parent / EXPORTS_DIR, requested, mode)
        if self.runtime_note:
            logging.getLogger(__name__).warning(self.runtime_note)
        self.runtime = exported.runtime if exported is not None else KERAS
        self.inspector = inspector_from_files(
            keras_path, context.artifacts["thresholds"], context.artifacts["geometry"], exported=exported
        )

    # ``pd.DataFrame`` is one of the hints MLflow infers no schema from and never validates or converts
    # against, so it silences MLflow's "add type hints" warning while arrays, dicts and lists still pass
    # through untouched (see :func:`images_from_model_input`).
    def predict(
        self, context: PythonModelContext, model_input: pd.DataFrame, params: dict[str, Any] | None = None
    ) -> pd.DataFrame:
        return results_frame(self.inspector.inspect(images_from_model_input(model_input)))


def inspector_from_files(
    keras_path: str | Path,
    thresholds_path: str | Path,
    geometry_path: str | Path,
    *,
    exported: ExportedModel | StripModel | None = None,
) -> Inspector:
    """Rebuild the Inspector from the three artefacts of a logged model; ``exported`` scores in Keras' place.

    A model logged before strip mode has no ``mode`` in its geometry: it scores in patch mode, as it was evaluated.
    """
    import keras

    from steelqc.inference import Inspector

    model = exported if exported is not None else keras.saving.load_model(keras_path, compile=False)
    thresholds = Thresholds.from_dict(json.loads(Path(thresholds_path).read_text()))
    geometry = json.loads(Path(geometry_path).read_text())
    return Inspector(model, thresholds, geometry["patch_size"], geometry["stride"], geometry["pad_mode"],
                     mode=geometry.get("mode", PATCHES))  # fmt: skip


def pip_requirements() -> list[str]:
    """Pinned requirements of the pyfunc from the running environment (no slow inference by MLflow)."""
    pins = []
    for package in PYFUNC_PACKAGES:
        try:
            pins.append(f"{package}=={version(package)}")
        except PackageNotFoundError:
            continue
    return pins


def log_pyfunc_model(
    model: Any,
    thresholds: Thresholds,
    patches: PatchSettings,
    example_image: np.ndarray,
    mode: InferenceMode = PATCHES,
) -> ModelInfo:
    """Log the Keras model + thresholds + geometry (with the inference ``mode``) as the ``model`` pyfunc of the
    active run.

    The signature names the outputs only: inputs are deliberately polymorphic (bytes, base64, arrays),
    which a column or tensor input schema would reject. steelqc's code travels with the model
    (``code_paths``) so a serving environment needs only the pinned packages.
    """
    from steelqc.data.images import encode_png

    with tempfile.TemporaryDirectory(prefix="steelqc-model-") as tmp:
        keras_path = Path(tmp) / "model.keras"
        model.save(keras_path)
        thresholds_path = Path(tmp) / "thresholds.json"
        thresholds_path.write_text(json.dumps(thresholds.to_dict(), indent=2))
        geometry_path = Path(tmp) / "geometry.json"
        geometry_path.write_text(json.dumps(geometry_of(patches, mode), indent=2))
        return mlflow.pyfunc.log_model(
            name=MODEL_NAME_IN_RUN,
            python_model=SteelQCModel(),
            artifacts={
                "keras_model": str(keras_path),
                "thresholds": str(thresholds_path),
                "geometry": str(geometry_path),
            },
            code_paths=[str(Path(steelqc.__file__).parent)],
            signature=ModelSignature(inputs=None, outputs=OUTPUT_SIGNATURE),
            input_example=pd.DataFrame({"image": [encode_png(example_image)]}),
            pip_requirements=pip_requirements(),
            model_config={RUNTIME_CONFIG_KEY: AUTO},  # logged, so load_model(model_config=...) may override it
        )


# --- registry: versions, tags, aliases ---------------------------------------------------------------


def git_commit() -> str:
    """The checked-out commit of the project, or ``"unknown"`` outside a git checkout."""
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=10, check=True
        )
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return out.stdout.strip() or "unknown"


def version_tags(metrics: Mapping[str, float], thresholds: Thresholds, data_hash: str) -> dict[str, str]:
    """The tags every registered version carries: test-split patch metrics, thresholds, lineage.

    Image-level metrics (:data:`IMAGE_METRIC_TAGS`) are added when ``metrics`` has them.
    """
    image_tags = {name: f"{metrics[name]:.6f}" for name in IMAGE_METRIC_TAGS if metrics.get(name) is not None}
    return {
        "recall": f"{metrics['patch_recall']:.6f}",
        "recall_bound": f"{thresholds.recall_bound:.6f}",
        "precision": f"{metrics['patch_precision']:.6f}",
        "specificity": f"{metrics['patch_specificity']:.6f}",
        "t_pass": f"{thresholds.t_pass:.6f}",
        "t_fail": f"{thresholds.t_fail:.6f}",
        "data_hash": data_hash,
        "git_commit": git_commit(),
        **image_tags,
    }


def register_version(model_uri: str, name: str, tags: Mapping[str, str]) -> ModelVersion:
    """Register ``model_uri`` as a new version of ``name`` (created if needed) carrying ``tags``."""
    return mlflow.register_model(model_uri, name, tags=dict(tags))


@dataclass(frozen=True)
class ModelMetadata:
    """What a caller needs to show about a loaded model: where it came from and how it decides."""

    uri: str
    thresholds: Thresholds
    geometry: dict[str, Any]
    name: str | None = None
    version: str | None = None
    tags: dict[str, str] | None = None
    run_id: str | None = None
    runtime: str = KERAS
    runtime_note: str | None = None


def takes_runtime_setting(model_uri: str) -> bool:
    """Whether the logged pyfunc has a ``runtime`` model config (models logged before exports do not)."""
    flavor = get_model_info(model_uri).flavors.get("python_function", {})
    return RUNTIME_CONFIG_KEY in (flavor.get(MODEL_CONFIG) or {})


def load_inspector(model_uri: str, *, runtime: str = KERAS) -> tuple[Inspector, ModelMetadata]:
    """Load a logged/registered steelqc model (``models:/steelqc@champion``, ``runs:/…/model``) for inspection.

    ``runtime`` is the pyfunc's (see :class:`SteelQCModel`); Keras by default, because evaluation feeds the
    model a ``tf.data`` pipeline, which only the Keras model takes.
    """
    # a model logged before exports takes no runtime setting (MLflow would warn it ignored one): it scores with Keras
    config = {RUNTIME_CONFIG_KEY: runtime} if takes_runtime_setting(model_uri) else None
    pyfunc = mlflow.pyfunc.load_model(model_uri, model_config=config)
    wrapped = pyfunc.unwrap_python_model()
    if not isinstance(wrapped, SteelQCModel):
        raise MlflowException(f"{model_uri} is not a steelqc model (python model {type(wrapped).__name__})")
    inspector = wrapped.inspector
    registered = registered_version(model_uri)
    return inspector, ModelMetadata(
        uri=model_uri,
        thresholds=inspector.thresholds,
        geometry={"patch_size": inspector.patch_size, "stride": inspector.stride, "pad_mode": inspector.pad_mode,
                  "mode": inspector.mode},  # fmt: skip
        name=registered.name if registered else None,
        version=str(registered.version) if registered else None,
        tags=dict(registered.tags) if registered else None,
        run_id=registered.run_id if registered else pyfunc.metadata.run_id,
        runtime=wrapped.runtime,
        runtime_note=wrapped.runtime_note,
    )


def registered_version(model_uri: str) -> ModelVersion | None:
    """The registry entry behind ``models:/name@alias`` or ``models:/name/version``; None for other URIs."""
    if not model_uri.startswith("models:/"):
        return None
    ref = model_uri.removeprefix("models:/")
    client = MlflowClient()
    if "@" in ref:
        name, alias = ref.split("@", 1)
        return client.get_model_version_by_alias(name, alias)
    if "/" in ref:
        name, number = ref.split("/", 1)
        return client.get_model_version(name, number)
    return None
