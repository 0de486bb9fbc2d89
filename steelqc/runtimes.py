"""Exported inference runtimes: the Keras model written as OpenVINO IR or ONNX, and loaded back in its place.

Exports use Keras' own ``model.export``. An export is made for one inference mode (``manifest.json`` says
which): in patch mode the graph has two outputs, score and embedding, so the patch log's embeddings come from
the same pass as the decisions; in strip mode it is the backbone for images of any height and width (dynamic
spatial dimensions) and the head travels beside it as ``head.npz``. A manifest of file checksums travels with
the files: a truncated or altered file is refused at load time instead of scoring with garbage weights.

Speed on these 2 cores (``bench/inspect.py``, Lite0 at 256 px, quiet machine): both runtimes score 1.7-2.0x as
fast as TensorFlow's own forward, with scores equal to ~1e-5. That is near this CPU's float32 ceiling (a
2048² sgemm in NumPy; the bench prints both). Computing in bf16 (OpenVINO's default on CPUs with AVX512-BF16)
would be 3.1-3.3x, but moved the ImageNet Lite0's scores by 1.4e-2 to 4.2e-2 there, so exports always compute
in f32. ``bench/runtime_settings.py`` compares the runtimes' settings on a given CPU.
"""

from __future__ import annotations

import hashlib
import json
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from steelqc.config import PATCHES, STRIP, InferenceMode
from steelqc.strip import HEAD_FILE, PatchHead, StripModel, strip_feature_model

KERAS = "keras"
AUTO = "auto"
EXPORT_FORMATS = ("onnx", "openvino")
RUNTIMES = (KERAS, *EXPORT_FORMATS)
# what ``auto`` tries first, per mode: the faster one in bench/inspect.py and bench/runtime_settings.py on the quiet
# 2-core machine (patch mode: OpenVINO's throughput streams 1.90-1.98x TensorFlow, ONNX Runtime 1.84-1.90x;
# strip mode: ONNX Runtime 1.48-2.01x, OpenVINO 1.22-1.71x)
PREFERENCE: dict[str, tuple[str, ...]] = {PATCHES: ("openvino", "onnx"), STRIP: ("onnx", "openvino")}
MODEL_FILES = {"openvino": "model.xml", "onnx": "model.onnx"}  # OpenVINO writes model.bin beside model.xml
MANIFEST_FILE = "manifest.json"
EXPORTS_DIR = "exports"  # beside the Keras file in a logged model's artifacts: artifacts/exports/<format>/


class RuntimeUnavailableError(RuntimeError):
    """An export that cannot be used (missing, altered, or its runtime failed to load it)."""


class ExportedModel:
    """Stands in for the Keras model: ``predict_on_batch`` gives scores, ``predict_both`` also embeddings."""

    runtime: str

    def outputs(self, x: np.ndarray) -> list[np.ndarray]:
        """Every output of the exported graph for input ``x``."""
        raise NotImplementedError

    def predict_both(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        scores, embeddings = self.outputs(x)[:2]  # Keras' OpenVINO export may append internal shape outputs
        return scores, embeddings

    def first_output(self, x: np.ndarray) -> np.ndarray:
        return self.outputs(x)[0]

    def predict_on_batch(self, x: np.ndarray) -> np.ndarray:
        return self.predict_both(x)[0]


class OpenVINOModel(ExportedModel):
    """An OpenVINO export on the CPU plugin, always computing in f32.

    Patch mode compiles for throughput: one inference stream per core, each given one patch at a time through
    an async queue (1.2x a single request on the whole batch, bench/runtime_settings.py). Strip mode compiles
    for latency: one strip already fills both cores, and a single strip (the app) would get only one stream's
    core.
    """

    runtime = "openvino"

    def __init__(self, folder: Path, mode: str = PATCHES) -> None:
        import openvino as ov

        # f32, not the CPU plugin's default: on CPUs with AVX512-BF16 or AMX it computes in bf16, which moves
        # scores by ~5e-3 and fails the 1e-4 parity check against Keras (seen on an AMD EPYC with avx512_bf16).
        hint = "THROUGHPUT" if mode == PATCHES else "LATENCY"
        config = {"INFERENCE_PRECISION_HINT": "f32", "PERFORMANCE_HINT": hint}
        self._compiled = ov.Core().compile_model(folder / MODEL_FILES["openvino"], "CPU", config)
        self._queue = (
            ov.AsyncInferQueue(self._compiled, self._compiled.get_property("OPTIMAL_NUMBER_OF_INFER_REQUESTS"))
            if mode == PATCHES
            else None
        )
        self._lock = threading.Lock()  # one caller at a time per request queue (the app serves several sessions)

    def outputs(self, x: np.ndarray) -> list[np.ndarray]:
        count = len(self._compiled.outputs)
        with self._lock:
            if self._queue is None or len(x) < 2:
                out = self._compiled(x)
                return [np.asarray(out[i]) for i in range(count)]
            per_item: list[list[np.ndarray]] = [[] for _ in range(len(x))]

            def keep(request: Any, index: int) -> None:
                per_item[index] = [request.get_output_tensor(i).data.copy() for i in range(count)]

            self._queue.set_callback(keep)
            for i in range(len(x)):
                self._queue.start_async({0: x[i : i + 1]}, i)
            self._queue.wait_all()
        # Keras' export may append internal shape outputs (0-d): one per call, not per item
        return [np.concatenate([item[k] for item in per_item]) if per_item[0][k].ndim else per_item[0][k]
                for k in range(count)]  # fmt: skip


class ONNXModel(ExportedModel):
    runtime = "onnx"

    def __init__(self, folder: Path, mode: str = PATCHES) -> None:  # one session serves both modes
        import onnxruntime as ort

        self._session = ort.InferenceSession(str(folder / MODEL_FILES["onnx"]), providers=["CPUExecutionProvider"])
        self._input = self._session.get_inputs()[0].name

    def outputs(self, x: np.ndarray) -> list[np.ndarray]:
        return [np.asarray(out) for out in self._session.run(None, {self._input: x})]


LOADERS: dict[str, Callable[[Path, str], ExportedModel]] = {"openvino": OpenVINOModel, "onnx": ONNXModel}


def _sha256(path: Path) -> str:
    with path.open("rb") as file:
        return hashlib.file_digest(file, "sha256").hexdigest()


def export_runtime(model: Any, fmt: str, folder: str | Path, *, mode: InferenceMode = PATCHES) -> Path:
    """Write the Keras patch ``model`` as ``fmt`` for inference ``mode`` into ``folder`` with its checksum
    manifest; the folder. Patch mode exports the patch model (outputs score and embedding); strip mode the
    backbone for images of any size (output the feature map) plus the head's weights (:data:`HEAD_FILE`)."""
    import keras

    from steelqc.model import EMBEDDING_LAYER

    if fmt not in EXPORT_FORMATS:
        raise ValueError(f"export format must be one of {', '.join(EXPORT_FORMATS)}, got {fmt!r}")
    out = Path(folder)
    out.mkdir(parents=True, exist_ok=True)
    described: dict[str, Any] = {"format": fmt, "mode": mode}
    if mode == STRIP:
        graph, described["cell"] = strip_feature_model(model)
        PatchHead.of(model).save(out / HEAD_FILE)
        probe = np.zeros((1, *model.inputs[0].shape[1:]), np.float32)
    else:
        graph = keras.Model(model.inputs, [model.outputs[0], model.get_layer(EMBEDDING_LAYER).output])
        probe = np.zeros((1, *graph.inputs[0].shape[1:]), np.float32)
    graph.predict_on_batch(probe)  # Keras' ONNX export needs a built call
    graph.export(str(out / MODEL_FILES[fmt]), format=fmt, verbose=False)
    files = {path.name: _sha256(path) for path in sorted(out.iterdir()) if path.name != MANIFEST_FILE}
    write_manifest(out, {**described, "files": files})
    return out


def read_manifest(folder: str | Path) -> dict[str, Any]:
    """The manifest of an export folder; an unreadable one raises :class:`RuntimeUnavailableError`."""
    path = Path(folder) / MANIFEST_FILE
    try:
        manifest = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise RuntimeUnavailableError(f"export manifest {path} unreadable ({exc})") from exc
    if manifest.get("format") not in EXPORT_FORMATS or not isinstance(manifest.get("files"), dict):
        raise RuntimeUnavailableError(f"export manifest {path} names no known format and files")
    return manifest


def write_manifest(folder: str | Path, manifest: dict[str, Any]) -> None:
    (Path(folder) / MANIFEST_FILE).write_text(json.dumps(manifest, indent=2))


def load_runtime(folder: str | Path) -> ExportedModel | StripModel:
    """The exported model in ``folder`` after checking every file against the manifest (a strip-mode export:
    its runtime's feature maps and the head, ready for :class:`~steelqc.inference.Inspector` in strip mode)."""
    folder = Path(folder)
    manifest = read_manifest(folder)
    fmt = manifest["format"]
    for name, digest in manifest["files"].items():
        path = folder / name
        if not path.is_file():
            raise RuntimeUnavailableError(f"{fmt} export file {path} is missing")
        if _sha256(path) != digest:
            raise RuntimeUnavailableError(
                f"{fmt} export file {path} does not match its checksum (corrupted or changed)"
            )
    try:
        mode = manifest.get("mode", PATCHES)
        exported = LOADERS[fmt](folder, mode)
        if mode == STRIP:
            return StripModel(exported.first_output, PatchHead.load(folder / HEAD_FILE), int(manifest["cell"]), fmt)
        return exported
    except Exception as exc:  # noqa: BLE001 - any runtime failure (missing package, bad graph) means: use Keras
        raise RuntimeUnavailableError(f"{fmt} could not load {folder}: {type(exc).__name__}: {exc}") from exc


def export_mode(folder: str | Path) -> str:
    """The inference mode an export folder was made for (exports made before strip mode: patches)."""
    return str(read_manifest(folder).get("mode", PATCHES))


def choose_runtime(
    exports_dir: str | Path, requested: str, mode: InferenceMode = PATCHES
) -> tuple[ExportedModel | StripModel | None, str | None]:
    """The exported model to score with, or None for Keras, and why Keras when an export was wanted.

    ``auto`` takes the first export present in the mode's :data:`PREFERENCE` order that loads; ``keras`` never loads
    one; a named format loads that one. Only exports that passed the parity check are ever stored with a
    model, so presence means it passed. Anything wrong with an export falls back to Keras, never to no model.
    """
    if requested not in (AUTO, *RUNTIMES):
        raise ValueError(f"runtime must be one of {AUTO}, {', '.join(RUNTIMES)}, got {requested!r}")
    if requested == KERAS:
        return None, None
    wanted = PREFERENCE[mode] if requested == AUTO else (requested,)
    present = [fmt for fmt in wanted if (Path(exports_dir) / fmt).is_dir()]
    if not present:
        return None, None if requested == AUTO else f"the model has no {requested} export: scoring with keras"
    problems: list[str] = []
    for fmt in present:
        try:
            if (made_for := export_mode(Path(exports_dir) / fmt)) != mode:
                raise RuntimeUnavailableError(f"the {fmt} export scores in {made_for} mode, the model in {mode} mode")
            return load_runtime(
                Path(exports_dir) / fmt
            ), f"{'; '.join(problems)}: scoring with {fmt}" if problems else None
        except RuntimeUnavailableError as exc:
            problems.append(str(exc))
    return None, f"{'; '.join(problems)}: scoring with keras"
