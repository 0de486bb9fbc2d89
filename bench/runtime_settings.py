"""Which settings of ONNX Runtime and OpenVINO score fastest on this CPU? The forward pass alone, per mode.

Exports the Lite0 patch model in both modes (ImageNet backbone by default, so that the bf16 difference means
something; speed does not depend on the weights) and times, on the same ready tensors, alternating within
every round after a warm-up round:

- Keras (TensorFlow's forward: the baseline of every ratio);
- ONNX Runtime: the default session (what steelqc uses), two intra-op threads, no spin-waiting;
- OpenVINO f32: one request on the whole batch under the LATENCY hint (what steelqc uses in strip mode), and
  the THROUGHPUT hint with one request per item through an async queue (what it uses in patch mode);
- OpenVINO bf16 (the CPU plugin's default on CPUs with AVX512-BF16 or AMX), for reference: it fails the 1e-4
  parity check, so steelqc never uses it; its largest score difference from f32 is printed beside it.

A line-side box with another CPU can rerun this to see whether the defaults in ``steelqc/runtimes.py`` still
hold there.

    .venv/bin/python -P bench/runtime_settings.py [--modes patches,strip] [--rounds 3] [--weights imagenet|none]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from steelqc.config import PATCHES, STRIP, ModelSettings
from steelqc.model import build_model
from steelqc.runtimes import MODEL_FILES, export_runtime
from steelqc.strip import keras_strip_model

Forward = Callable[[np.ndarray], Any]


def onnx_session(folder: Path, **entries: str) -> Forward:
    import onnxruntime as ort

    options = ort.SessionOptions()
    for key, value in entries.items():
        if key == "threads":
            options.intra_op_num_threads = int(value)
        else:
            options.add_session_config_entry(key, value)
    session = ort.InferenceSession(str(folder / MODEL_FILES["onnx"]), options, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    return lambda x: session.run(None, {name: x})[0]


def openvino_single(folder: Path, precision: str = "f32", hint: str = "LATENCY") -> Forward:
    import openvino as ov

    compiled = ov.Core().compile_model(folder / MODEL_FILES["openvino"], "CPU",
                                       {"INFERENCE_PRECISION_HINT": precision, "PERFORMANCE_HINT": hint})  # fmt: skip
    return lambda x: np.asarray(compiled(x)[0])


def openvino_per_item(folder: Path) -> Forward:
    import openvino as ov

    config = {"INFERENCE_PRECISION_HINT": "f32", "PERFORMANCE_HINT": "THROUGHPUT"}
    compiled = ov.Core().compile_model(folder / MODEL_FILES["openvino"], "CPU", config)
    queue = ov.AsyncInferQueue(compiled, compiled.get_property("OPTIMAL_NUMBER_OF_INFER_REQUESTS"))

    def run(x: np.ndarray) -> np.ndarray:
        out: list[np.ndarray] = [np.empty(0)] * len(x)
        queue.set_callback(lambda request, i: out.__setitem__(i, request.get_output_tensor(0).data.copy()))
        for i in range(len(x)):
            queue.start_async({0: x[i : i + 1]}, i)
        queue.wait_all()
        return np.concatenate(out)

    return run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--modes", default=f"{PATCHES},{STRIP}")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--weights", default="imagenet", help="backbone weights: imagenet, none or a file")
    args = parser.parse_args()
    model = build_model(ModelSettings(backbone="efficientnet_lite0", weights=args.weights, input_size=256), 256)
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory(prefix="steelqc-bench-runtimes-") as tmp:
        for mode in args.modes.split(","):
            # patch mode: 96 patches, 32 per call; strip mode: 8 strips of 256x1600, 4 per call
            shape, step = ((96, 256, 256, 1), 32) if mode == PATCHES else ((8, 256, 1600, 1), 4)
            x = rng.integers(0, 256, shape).astype(np.float32)
            folders = {fmt: export_runtime(model, fmt, Path(tmp) / f"{fmt}-{mode}", mode=mode)
                       for fmt in ("onnx", "openvino")}  # fmt: skip
            keras_forward = model.predict_on_batch if mode == PATCHES else keras_strip_model(model).feature_maps
            arms: dict[str, Forward] = {
                "keras (tensorflow)": keras_forward,
                "onnx default session": onnx_session(folders["onnx"]),
                "onnx 2 intra-op threads": onnx_session(folders["onnx"], threads="2"),
                "onnx no spin-waiting": onnx_session(folders["onnx"], **{"session.intra_op.allow_spinning": "0"}),
                "openvino f32 latency, one request": openvino_single(folders["openvino"]),
                "openvino f32 throughput, per item": openvino_per_item(folders["openvino"]),
                "openvino bf16 (reference)": openvino_single(folders["openvino"], "bf16"),
            }
            reference = np.concatenate([np.asarray(arms["openvino f32 latency, one request"](x[i : i + step]))
                                        for i in range(0, len(x), step)])  # fmt: skip
            bf16 = np.concatenate([np.asarray(arms["openvino bf16 (reference)"](x[i : i + step]))
                                   for i in range(0, len(x), step)])  # fmt: skip
            times: dict[str, list[float]] = {name: [] for name in arms}
            for counted in [False] + [True] * args.rounds:
                for name, forward in arms.items():
                    started = time.perf_counter()
                    for i in range(0, len(x), step):
                        forward(x[i : i + step])
                    if counted:
                        times[name].append(time.perf_counter() - started)
            unit = "patches" if mode == PATCHES else "strips"
            keras_rate = len(x) / min(times["keras (tensorflow)"])
            print(f"{mode} mode, {len(x)} {unit} of {shape[1]}x{shape[2]}, {step} per call, best of {args.rounds} "
                  f"rounds; load average {os.getloadavg()[0]:.1f}")  # fmt: skip
            for name, seconds in times.items():
                rate = len(x) / min(seconds)
                print(f"  {name:36}{rate:9.2f} {unit}/s{rate / keras_rate:7.2f}x keras")
            print(f"  bf16: max |output - f32 output| {np.max(np.abs(bf16 - reference)):.1e} (backbone output in "
                  "strip mode, score in patch mode)")  # fmt: skip


if __name__ == "__main__":
    main()
