"""Exported runtimes against the Keras model they came from: round trip, checksums, fall-back to Keras."""

from __future__ import annotations

from pathlib import Path

import keras
import numpy as np
import pytest

from steelqc.config import ModelSettings
from steelqc.data.synth import generate_strip
from steelqc.inference import Inspector
from steelqc.model import build_model, embedding_model, preprocess_patches
from steelqc.runtimes import (
    EXPORT_FORMATS,
    MODEL_FILES,
    RuntimeUnavailableError,
    choose_runtime,
    export_runtime,
    load_runtime,
)
from steelqc.strip import HEAD_FILE, StripModel
from steelqc.thresholds import Thresholds

from tiny_model_data import thresholds_between

PATCH, STRIDE = 128, 64
TOLERANCE = 1e-4


@pytest.fixture(scope="module")
def model() -> keras.Model:
    keras.utils.set_random_seed(0)
    return build_model(ModelSettings(backbone="small_cnn", weights="none", input_size=32), PATCH)


@pytest.fixture(scope="module")
def strips() -> list[np.ndarray]:
    rng = np.random.default_rng(1)
    return [generate_strip(rng, defective_classes=classes, contrast=2.0)[0] for classes in ((), (1,), (3,))]


@pytest.fixture(scope="module")
def exports(model: keras.Model, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("exports")
    return {fmt: export_runtime(model, fmt, root / fmt) for fmt in EXPORT_FORMATS}


@pytest.fixture(scope="module")
def strip_exports(model: keras.Model, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("strip-exports")
    return {fmt: export_runtime(model, fmt, root / fmt, mode="strip") for fmt in EXPORT_FORMATS}


def inspector(model: object, thresholds: Thresholds | None = None, mode: str = "patches") -> Inspector:
    return Inspector(
        model, thresholds or Thresholds(0.5, 0.9, 1, 1, 1, 0.5, 1, 1, True, "test"), PATCH, STRIDE, "reflect",
        mode=mode,  # type: ignore[arg-type]
    )  # fmt: skip


@pytest.mark.parametrize("fmt", EXPORT_FORMATS)
def test_export_load_score_round_trip_equals_keras(
    fmt: str, model: keras.Model, strips: list[np.ndarray], exports: dict[str, Path]
) -> None:
    exported = load_runtime(exports[fmt])
    assert exported.runtime == fmt
    chosen = thresholds_between(np.concatenate([r.patch_scores for r in inspector(model).inspect(strips)]))
    reference, candidate = inspector(model, chosen).inspect(strips), inspector(exported, chosen).inspect(strips)
    for ref, got in zip(reference, candidate, strict=True):
        assert np.max(np.abs(ref.patch_scores - got.patch_scores)) <= TOLERANCE
        assert list(ref.patch_decisions) == list(got.patch_decisions) and ref.decision == got.decision
    assert {d for r in reference for d in r.patch_decisions} == {"PASS", "HOLD", "FAIL"}


@pytest.mark.parametrize("fmt", EXPORT_FORMATS)
def test_strip_mode_export_round_trip_equals_keras_on_strips_of_any_size(
    fmt: str, model: keras.Model, strips: list[np.ndarray], strip_exports: dict[str, Path]
) -> None:
    """One graph for every image size (dynamic height and width), the whole-image resize inside it."""
    exported = load_runtime(strip_exports[fmt])
    assert isinstance(exported, StripModel) and exported.runtime == fmt and exported.cell == STRIDE
    images = [*strips, strips[1][:200, :777]]
    probe = inspector(model, mode="strip").inspect(images)
    chosen = thresholds_between(np.concatenate([r.patch_scores for r in probe]))
    reference = inspector(model, chosen, "strip").inspect(images)
    candidate = inspector(exported, chosen, "strip").inspect(images)
    for ref, got in zip(reference, candidate, strict=True):
        assert ref.positions == got.positions
        assert np.max(np.abs(ref.patch_scores - got.patch_scores)) <= TOLERANCE
        assert list(ref.patch_decisions) == list(got.patch_decisions) and ref.decision == got.decision
        assert ref.embeddings is not None and got.embeddings is not None
        np.testing.assert_allclose(ref.embeddings, got.embeddings, atol=1e-4)
    assert {d for r in reference for d in r.patch_decisions} == {"PASS", "HOLD", "FAIL"}


def test_an_export_made_for_the_other_mode_is_not_used(
    exports: dict[str, Path], strip_exports: dict[str, Path]
) -> None:
    exported, note = choose_runtime(strip_exports["onnx"].parent, "auto", "patches")
    assert exported is None and note is not None
    assert "the onnx export scores in strip mode, the model in patches mode" in note
    assert note.endswith("scoring with keras")
    exported, note = choose_runtime(strip_exports["onnx"].parent, "auto", "strip")
    assert isinstance(exported, StripModel) and exported.runtime == "onnx" and note is None
    exported, note = choose_runtime(exports["onnx"].parent, "onnx", "strip")
    assert exported is None and note is not None and "scores in patches mode, the model in strip mode" in note


def test_a_corrupted_strip_export_falls_back_to_keras_with_the_reason(
    strip_exports: dict[str, Path], tmp_path: Path
) -> None:
    import shutil

    folder = Path(shutil.copytree(strip_exports["onnx"], tmp_path / "onnx"))
    head = folder / HEAD_FILE
    data = bytearray(head.read_bytes())
    data[-20] ^= 0xFF  # inside the head's weights: NumPy would load it and score with it
    head.write_bytes(bytes(data))
    exported, note = choose_runtime(tmp_path, "auto", "strip")
    assert exported is None and note is not None
    assert f"{HEAD_FILE} does not match its checksum" in note and note.endswith("scoring with keras")


@pytest.mark.parametrize("fmt", EXPORT_FORMATS)
def test_exported_embeddings_are_the_keras_embeddings(fmt: str, model: keras.Model, strips: list[np.ndarray],
                                                      exports: dict[str, Path]) -> None:  # fmt: skip
    patches = preprocess_patches(np.stack([strips[1][:PATCH, x : x + PATCH] for x in (0, 500, 1000)]))
    scores, embeddings = load_runtime(exports[fmt]).predict_both(patches)
    np.testing.assert_allclose(embeddings, embedding_model(model).predict_on_batch(patches), atol=1e-4)
    np.testing.assert_allclose(scores, model.predict_on_batch(patches), atol=TOLERANCE)


def test_a_corrupted_export_file_is_refused_by_its_checksum(exports: dict[str, Path], tmp_path: Path) -> None:
    import shutil

    folder = Path(shutil.copytree(exports["openvino"], tmp_path / "openvino"))
    weights = folder / "model.bin"
    data = bytearray(weights.read_bytes())
    data[len(data) // 2] ^= 0xFF  # one flipped byte: OpenVINO itself would load it and score with it
    weights.write_bytes(bytes(data))
    with pytest.raises(RuntimeUnavailableError, match="model.bin does not match its checksum"):
        load_runtime(folder)
    exported, note = choose_runtime(tmp_path, "auto")
    assert exported is None and note is not None
    assert "model.bin does not match its checksum" in note and note.endswith("scoring with keras")


def test_auto_prefers_the_faster_runtime_of_the_mode_and_keras_needs_no_export(
    exports: dict[str, Path], strip_exports: dict[str, Path], tmp_path: Path
) -> None:
    root = exports["openvino"].parent
    exported, note = choose_runtime(root, "auto")
    assert exported is not None and exported.runtime == "openvino" and note is None  # throughput streams
    exported, note = choose_runtime(root, "onnx")
    assert exported is not None and exported.runtime == "onnx" and note is None
    exported, note = choose_runtime(strip_exports["openvino"].parent, "auto", "strip")
    assert isinstance(exported, StripModel) and exported.runtime == "onnx" and note is None
    assert choose_runtime(root, "keras") == (None, None)
    assert choose_runtime(tmp_path, "auto") == (None, None)  # no export: Keras, nothing to report


def test_a_named_runtime_without_its_export_falls_back_to_keras_and_says_so(tmp_path: Path) -> None:
    exported, note = choose_runtime(tmp_path, "openvino")
    assert exported is None and note == "the model has no openvino export: scoring with keras"
    with pytest.raises(ValueError, match="runtime must be one of"):
        choose_runtime(tmp_path, "tensorrt")


def test_a_broken_first_choice_gives_the_next_export_and_the_reason(exports: dict[str, Path], tmp_path: Path) -> None:
    import shutil

    shutil.copytree(exports["onnx"], tmp_path / "onnx")
    (tmp_path / "openvino").mkdir()
    exported, note = choose_runtime(tmp_path, "auto")
    assert exported is not None and exported.runtime == "onnx"
    assert note is not None and "manifest" in note and note.endswith("scoring with onnx")
    assert MODEL_FILES["onnx"] in {p.name for p in (tmp_path / "onnx").iterdir()}


def test_a_pyfunc_logged_without_a_runtime_setting_never_picks_up_an_export(
    model: keras.Model, exports: dict[str, Path], tmp_path: Path
) -> None:
    import json
    import shutil

    from mlflow.pyfunc import PythonModelContext

    from steelqc.pyfunc import SteelQCModel

    model.save(tmp_path / "model.keras")
    (tmp_path / "thresholds.json").write_text(json.dumps(Thresholds(0.5, 0.9, 1, 1, 1, 0.5, 1, 1, True, "t").to_dict()))
    (tmp_path / "geometry.json").write_text(json.dumps({"patch_size": PATCH, "stride": STRIDE, "pad_mode": "reflect"}))
    shutil.copytree(exports["openvino"], tmp_path / "exports" / "openvino")
    files = {"keras_model": str(tmp_path / "model.keras"), "thresholds": str(tmp_path / "thresholds.json"),
             "geometry": str(tmp_path / "geometry.json")}  # fmt: skip
    pyfunc = SteelQCModel()
    for config, runtime in (({}, "keras"), ({"runtime": "auto"}, "openvino"), ({"runtime": "keras"}, "keras")):
        pyfunc.load_context(PythonModelContext(artifacts=files, model_config=config))
        assert pyfunc.runtime == runtime and isinstance(pyfunc.inspector.model, keras.Model) == (runtime == "keras")
