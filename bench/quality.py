"""Quality on real pixels: the production retraining flow, pretrained Lite0 vs a small CNN from scratch.

DATA is a Severstal-layout folder, or an image+mask folder that is first imported with
``steelqc import-masks DATA --out WORK/imported --size 256x256`` (tile-sized images become one patch each).
Each arm runs ``steelqc pipeline DATA --config real --auto-approve`` — validation, patches, two-stage
training, thresholds on validation, evaluation on the held-out test images, registration, gate — in a
throwaway state folder of its own (MLflow on SQLite there, Prefect ephemeral), then reads the test metrics
from the registered version's MLflow run. Printed per arm: image-level recall, precision, specificity,
PR-AUC and ROC-AUC at ``t_pass``, HOLD / FAIL rates, the validation recall bound and the wall time; then
Lite0 / small CNN. Wall times of the two arms are sequential, so compare them on a quiet machine.

    .venv/bin/python -P bench/quality.py DATA [--work DIR] [--arms lite0,small_cnn] [--set k=v ...]
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ARMS = {
    "lite0": ["--set", "model.backbone=efficientnet_lite0", "--set", "model.weights=imagenet"],
    "small_cnn": ["--set", "model.backbone=small_cnn", "--set", "model.weights=none"],
}
COLUMNS = (  # MLflow metric names: the split they were measured on, then the metric
    ("test/image_recall", "recall"),
    ("test/image_precision", "precision"),
    ("test/image_specificity", "specificity"),
    ("test/image_pr_auc", "PR-AUC"),
    ("test/image_roc_auc", "ROC-AUC"),
    ("test/image_hold_rate", "HOLD"),
    ("test/image_fail_rate", "FAIL"),
    ("val/recall_bound", "val bound"),
)
REGISTERED = re.compile(r"registered: \S+ v(\d+) \(MLflow run (\w+)\)")


def _steelqc() -> str:
    """The ``steelqc`` entry point of the interpreter running this script (the project's venv)."""
    return str(Path(sys.executable).parent / "steelqc")


def _run(command: list[str], env: dict[str, str], log: Path) -> tuple[int, str, float]:
    started = time.monotonic()
    with log.open("w") as out:
        done = subprocess.run(command, env=env, stdout=subprocess.PIPE, stderr=out, text=True, check=False)
    log.with_suffix(".stdout").write_text(done.stdout)
    return done.returncode, done.stdout, time.monotonic() - started


def _dataset(data: Path, work: Path) -> Path:
    if (data / "train.csv").is_file():
        return data
    imported = work / "imported"
    if not (imported / "train.csv").is_file():
        code, out, seconds = _run([_steelqc(), "import-masks", str(data), "--out", str(imported), "--size", "256x256"],
                                  dict(os.environ), work / "import.log")
        if code:
            sys.exit(f"import-masks failed (exit {code}); see {work / 'import.log'}\n{out}")
        print(f"imported {data} → {imported} in {seconds:.1f} s")
    return imported


def _run_metrics(state: Path, run_id: str) -> dict[str, float]:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{state / 'mlflow.db'}")
    return dict(client.get_run(run_id).data.metrics)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data", type=Path, help="Severstal-layout folder, or image+mask folder to import")
    parser.add_argument("--work", type=Path, help="Keep imports, state folders and logs here (default: a temp dir)")
    parser.add_argument("--arms", default="lite0,small_cnn", help=f"Comma-separated subset of {', '.join(ARMS)}")
    parser.add_argument("--set", dest="sets", action="append", default=[], help="Extra --set for every arm")
    args = parser.parse_args()
    arms = [a.strip() for a in args.arms.split(",") if a.strip()]
    if unknown := set(arms) - set(ARMS):
        parser.error(f"unknown arms {sorted(unknown)}; choose from {list(ARMS)}")

    with tempfile.TemporaryDirectory(prefix="steelqc-quality-") as tmp:
        work = (args.work or Path(tmp)).resolve()
        work.mkdir(parents=True, exist_ok=True)
        data = _dataset(args.data.resolve(), work)
        extra = [token for s in args.sets for token in ("--set", s)]
        results: dict[str, tuple[dict[str, float], float, str]] = {}
        load_before = os.getloadavg()[0]
        for arm in arms:
            state = work / f"state-{arm}"
            env = {**os.environ, "STEELQC_STATE_DIR": str(state)}
            for key in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI", "PREFECT_API_URL"):
                env.pop(key, None)  # a throwaway registry and ephemeral Prefect, never the user's servers
            command = [_steelqc(), "pipeline", str(data), "--config", "real", "--auto-approve", *ARMS[arm], *extra]
            code, out, seconds = _run(command, env, work / f"{arm}.log")
            registered = REGISTERED.search(out)
            if not registered:
                sys.exit(f"{arm}: the pipeline registered nothing (exit {code}); see {work / f'{arm}.log'}\n{out}")
            gate = next((line for line in out.splitlines() if line.startswith("gate:")), "gate: ?")
            results[arm] = (_run_metrics(state, registered.group(2)), seconds, gate)
            print(f"{arm}: {seconds:.0f} s, {gate}", flush=True)

    metrics_any = next(iter(results.values()))[0]
    print(f"\n{data}: test split, image level, at t_pass ({int(metrics_any.get('image_n', 0))} images, "
          f"{int(metrics_any.get('image_n_defective', 0))} defective)")
    print(f"{'arm':<11}" + "".join(f"{title:>12}" for _, title in COLUMNS) + f"{'wall s':>9}")
    for arm, (metrics, seconds, _) in results.items():
        print(
            f"{arm:<11}"
            + "".join(f"{metrics.get(key, float('nan')):>12.3f}" for key, _ in COLUMNS)
            + f"{seconds:>9.0f}"
        )
    if {"lite0", "small_cnn"} <= set(results):
        lite, cnn = results["lite0"][0], results["small_cnn"][0]
        ratios = "  ".join(f"{title} {lite[key] / cnn[key]:.2f}" for key, title in COLUMNS[:5] if cnn.get(key))
        print(f"ratio lite0 / small_cnn: {ratios}; wall {results['lite0'][1] / results['small_cnn'][1]:.2f}")
    print(f"load average at start {load_before:.1f}, at end {os.getloadavg()[0]:.1f} ({os.cpu_count()} CPUs)")


if __name__ == "__main__":
    main()
