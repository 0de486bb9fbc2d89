"""The decision-making pyfunc: log a steelqc model with its thresholds and geometry, load it back for inspection.

A registered version is self-contained: the Keras model, its thresholds and its patch geometry travel
together inside one pyfunc, so ``mlflow.pyfunc.load_model("models:/steelqc@champion")`` and
``mlflow models serve`` return decisions, not raw scores, and a model can never be paired with another
model's thresholds.
"""

from __future__ import annotations

import json
import logging
import tempfile
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import TYPE_CHECKING, Any

import mlflow
import numpy as np
import pandas as pd
from mlflow.exceptions import MlflowException
from mlflow.models import ModelSignature, get_model_info
from mlflow.models.model import MODEL_CONFIG, ModelInfo
from mlflow.pyfunc import PythonModel, PythonModelContext
from mlflow.types import Schema

import steelqc
from steelqc.config import PATCHES, InferenceMode, PatchSettings
from steelqc.pyfunc_io import (
    INPUT_SIGNATURE,
    NOVELTY_SIGNATURE,
    OUTPUT_SIGNATURE,
    images_from_model_input,
    results_frame,
    serving_errors,
)
from steelqc.registry import registered_version
from steelqc.runtimes import AUTO, EXPORTS_DIR, KERAS, ExportedModel, choose_runtime
from steelqc.strip import StripModel
from steelqc.thresholds import Thresholds

# steelqc.inference brings TensorFlow: it is imported where a model is built or loaded.
if TYPE_CHECKING:
    from steelqc.inference import Inspector
    from steelqc.novelty import NoveltyBank

MODEL_NAME_IN_RUN = "model"
RUNTIME_CONFIG_KEY = "runtime"
# Packages the pyfunc imports (steelqc's inference path); explicit because inference takes ~7 s.
PYFUNC_PACKAGES = (
    "mlflow",
    "tensorflow-cpu",
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


def geometry_of(patches: PatchSettings, mode: InferenceMode = PATCHES) -> dict[str, Any]:
    """The patch geometry a model was trained with and the mode its thresholds were chosen in; inference must
    score the same way."""
    return {"patch_size": patches.size, "stride": patches.stride, "pad_mode": patches.pad_mode, "mode": mode}


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
        from steelqc.novelty import NOVELTY_ARTIFACT, novelty_runs_on_export

        bank_path = context.artifacts.get(NOVELTY_ARTIFACT)  # absent for a model logged without a bank
        if exported is not None and bank_path is not None and not novelty_runs_on_export(bank_path):
            exported, self.runtime_note = None, "the novelty bank needs a layer exports lack: scoring with Keras"
        if self.runtime_note:
            logging.getLogger(__name__).warning(self.runtime_note)
        self.runtime = exported.runtime if exported is not None else KERAS
        self.inspector = inspector_from_files(
            keras_path, context.artifacts["thresholds"], context.artifacts["geometry"], exported=exported,
            novelty_bank=bank_path,
        )

    # ``pd.DataFrame`` is one of the hints MLflow infers no schema from and never validates or converts
    # against, so it silences MLflow's "add type hints" warning while arrays, dicts and lists still pass
    # through untouched (see :func:`images_from_model_input`).
    def predict(
        self, context: PythonModelContext, model_input: pd.DataFrame, params: dict[str, Any] | None = None
    ) -> pd.DataFrame:
        with serving_errors():
            return results_frame(self.inspector.inspect(images_from_model_input(model_input)))


def inspector_from_files(
    keras_path: str | Path,
    thresholds_path: str | Path,
    geometry_path: str | Path,
    *,
    exported: ExportedModel | StripModel | None = None,
    novelty_bank: str | Path | None = None,
) -> Inspector:
    """Rebuild the Inspector from the artefacts of a logged model; ``exported`` scores in Keras' place, and a
    ``novelty_bank`` (:mod:`steelqc.novelty`) guards its decisions.

    A model logged before strip mode has no ``mode`` in its geometry: it scores in patch mode, as it was evaluated.
    """
    import keras

    from steelqc.inference import Inspector

    model = exported if exported is not None else keras.saving.load_model(keras_path, compile=False)
    thresholds = Thresholds.from_dict(json.loads(Path(thresholds_path).read_text()))
    geometry = json.loads(Path(geometry_path).read_text())
    from steelqc.novelty import NoveltyBank, NoveltyGuard

    guard = NoveltyGuard(NoveltyBank.load(novelty_bank)) if novelty_bank is not None else None
    return Inspector(model, thresholds, geometry["patch_size"], geometry["stride"], geometry["pad_mode"],
                     novelty=guard, mode=geometry.get("mode", PATCHES))  # fmt: skip


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
    novelty_bank: NoveltyBank | None = None,
) -> ModelInfo:
    """Log the Keras model + thresholds + geometry (with the inference ``mode``) as the ``model`` pyfunc of the
    active run.

    The signature declares the input (:data:`~steelqc.pyfunc_io.INPUT_SIGNATURE`, a column ``image`` of encoded
    images) and the output; ``example_image`` becomes the input example, PNG-encoded. steelqc's code travels
    with the model (``code_paths``) so a serving environment needs only the pinned packages. A ``novelty_bank``
    travels as one more artefact and is loaded with the model; its outputs gain the novelty columns.
    """
    from steelqc.data.images import encode_png
    from steelqc.novelty import BANK_FILE, NOVELTY_ARTIFACT

    with tempfile.TemporaryDirectory(prefix="steelqc-model-") as tmp:
        keras_path = Path(tmp) / "model.keras"
        model.save(keras_path)
        thresholds_path = Path(tmp) / "thresholds.json"
        thresholds_path.write_text(json.dumps(thresholds.to_dict(), indent=2))
        geometry_path = Path(tmp) / "geometry.json"
        geometry_path.write_text(json.dumps(geometry_of(patches, mode), indent=2))
        artifacts = {"keras_model": str(keras_path), "thresholds": str(thresholds_path), "geometry": str(geometry_path)}
        outputs = OUTPUT_SIGNATURE
        if novelty_bank is not None:
            artifacts[NOVELTY_ARTIFACT] = str(novelty_bank.save(Path(tmp) / BANK_FILE))
            outputs = Schema([*OUTPUT_SIGNATURE.inputs, *NOVELTY_SIGNATURE])
        return mlflow.pyfunc.log_model(
            name=MODEL_NAME_IN_RUN,
            python_model=SteelQCModel(),
            artifacts=artifacts,
            code_paths=[str(Path(steelqc.__file__).parent)],
            signature=ModelSignature(inputs=INPUT_SIGNATURE, outputs=outputs),
            input_example=pd.DataFrame({"image": [encode_png(example_image)]}),
            pip_requirements=pip_requirements(),
            model_config={RUNTIME_CONFIG_KEY: AUTO},  # logged, so load_model(model_config=...) may override it
        )


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
