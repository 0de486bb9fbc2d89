"""Full-size run: validate and patch-index the real dataset's size (12,568 strips) with each task runner.

Generates Severstal-sized data with the real class mix (``steelqc.data.synth``), then runs one Prefect
flow — validation (Great Expectations, one task) followed by patch indexing mapped over image chunks and
re-split over the whole dataset — once on the local thread pool and once on a 2-worker Dask LocalCluster.
Each runner runs in its own process so its peak memory is its own: the peak is the largest sum of RSS
over that process and all its children (Dask's nanny and worker processes), sampled every 0.2 s.
Targets on 2 cores: under 10 minutes and under 4 GiB per runner. A Prefect server on 127.0.0.1 takes the
runs' states (Dask workers report to it directly); its memory is printed but not counted.

    .venv/bin/python bench/fullsize.py [--images 12568] [--data DIR] [--runners local dask] [--chunk 256]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import pandas as pd
import psutil
import requests

FULL_SIZE_IMAGES = 12_568  # Severstal's train_images
TARGET_SECONDS = 600.0
TARGET_BYTES = 4 * 1024**3
SAMPLE_EVERY_S = 0.2


# --- the measured flow (runs in a child process, one per runner) ---------------------------------------


def run_flow(root: str, runner: str, workers: int, chunk: int, report_dir: str) -> dict[str, Any]:
    """Validate ``root`` and build its patch index with ``runner`` through the retraining flow's own
    tasks (:func:`flows.retrain.validate_and_index`); returns counts and the wall time."""
    from prefect import flow

    from flows.retrain import validate_and_index
    from flows.runners import task_runner
    from steelqc.config import load_settings

    settings = load_settings(
        overrides={"data.chunk_images": chunk, "data.image_workers": 2, "validation.min_images": 10}
    )

    @flow(name="fullsize-bench", persist_result=False)
    def bench_flow(root: str) -> dict[str, Any]:
        started = time.perf_counter()
        validation, index = validate_and_index(root, settings, Path(report_dir))
        return {
            "seconds": time.perf_counter() - started,
            "images": int(index["image_id"].nunique()),
            "patches": len(index),
            "defective_patches": int(index["label"].sum()),
            "index_sha256": hashlib.sha256(
                pd.util.hash_pandas_object(index, index=False).to_numpy().tobytes()
            ).hexdigest(),
            "data_hash": validation["data_hash"],
        }

    return bench_flow.with_options(task_runner=task_runner(runner, n_workers=workers))(root)  # type: ignore[arg-type]


# --- the driver: data, Prefect server, one measured child per runner -----------------------------------


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_prefect_server(home: Path) -> tuple[subprocess.Popen[bytes], str]:
    """``prefect server start`` on 127.0.0.1 with its database under ``home``; returns it and its API URL."""
    port = _free_port()
    url = f"http://127.0.0.1:{port}/api"
    env = {**os.environ, "PREFECT_HOME": str(home), "HOME": str(home), "PREFECT_SERVER_ANALYTICS_ENABLED": "false"}
    log = (home / "server.log").open("wb")
    server = subprocess.Popen(
        [sys.executable, "-m", "prefect", "server", "start", "--host", "127.0.0.1", "--port", str(port)],
        stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True,
    )  # fmt: skip
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise RuntimeError(f"Prefect server exited:\n{(home / 'server.log').read_text()[-2000:]}")
        try:
            if requests.get(f"{url}/health", timeout=2).status_code == 200:
                return server, url
        except requests.RequestException:
            pass
        time.sleep(0.5)
    stop(server)
    raise RuntimeError("Prefect server did not start within 180 s")


def stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


def tree_rss(pid: int) -> int:
    """Resident bytes of a process and all its descendants (0 once it is gone)."""
    try:
        root = psutil.Process(pid)
        processes = [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return 0
    total = 0
    for process in processes:
        try:
            total += process.memory_info().rss
        except psutil.NoSuchProcess:
            continue
    return total


def measure(command: list[str], env: dict[str, str]) -> tuple[dict[str, Any], float, int]:
    """Run ``command`` (which prints one JSON line last); returns that result, wall seconds, peak tree RSS."""
    started = time.perf_counter()
    child = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, text=True)
    peak = 0
    done = threading.Event()

    def sample() -> None:
        nonlocal peak
        while not done.is_set():
            peak = max(peak, tree_rss(child.pid))
            done.wait(SAMPLE_EVERY_S)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    output, _ = child.communicate()
    done.set()
    sampler.join()
    wall = time.perf_counter() - started
    if child.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed with exit code {child.returncode}")
    return json.loads(output.strip().splitlines()[-1]), wall, peak


def generate(root: Path, images: int) -> float:
    from steelqc.data.synth import generate_dataset

    started = time.perf_counter()
    generate_dataset(root, images, seed=2026)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=FULL_SIZE_IMAGES, help="Strips to generate without --data")
    parser.add_argument("--data", help="An existing dataset folder (skips generation)")
    parser.add_argument("--runners", nargs="+", choices=["local", "dask"], default=["local", "dask"])
    parser.add_argument("--workers", type=int, default=2, help="Threads (local) or Dask worker processes")
    parser.add_argument("--chunk", type=int, default=256, help="Images per patch-indexing task")
    parser.add_argument("--child", choices=["local", "dask"], help=argparse.SUPPRESS)
    parser.add_argument("--report-dir", help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.child:  # one measured runner: print the flow's result as the last line
        result = run_flow(args.data, args.child, args.workers, args.chunk, args.report_dir)
        print(json.dumps(result))
        return

    with tempfile.TemporaryDirectory(prefix="steelqc-fullsize-") as tmp:
        work = Path(tmp)
        if args.data:
            root = args.data
        else:
            root = str(work / "dataset")
            seconds = generate(Path(root), args.images)
            print(f"generated {args.images} strips in {seconds:.1f} s ({args.images / seconds:.1f} images/s)")
        (work / "prefect").mkdir()
        server, api_url = start_prefect_server(work / "prefect")
        env = {**os.environ, "PREFECT_API_URL": api_url, "PREFECT_HOME": str(work / "prefect"), "HOME": str(work)}
        try:
            print(f"load average before: {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
            results = {}
            for runner in args.runners:
                command = [sys.executable, "-P", __file__, "--child", runner, "--data", root,
                           "--workers", str(args.workers), "--chunk", str(args.chunk),
                           "--report-dir", str(work / f"validation-{runner}")]  # fmt: skip
                # A result store of its own per runner: the patch-labelling cache must not serve the second runner.
                result, wall, peak = measure(command, {**env, "PREFECT_HOME": str(work / f"prefect-{runner}")})
                results[runner] = result
                ok = "ok" if wall < TARGET_SECONDS and peak < TARGET_BYTES else "OVER TARGET"
                print(
                    f"{runner:5s}: {wall:7.1f} s wall (flow {result['seconds']:.1f} s), "
                    f"peak {peak / 1024**3:.2f} GiB, {result['images']} images -> {result['patches']} patches "
                    f"({result['defective_patches']} defective)  [{ok}: < {TARGET_SECONDS / 60:.0f} min, < 4 GiB]"
                )
            outcomes = {
                json.dumps({k: v for k, v in r.items() if k != "seconds"}, sort_keys=True) for r in results.values()
            }
            if len(outcomes) > 1:
                raise SystemExit(f"the runners disagree on the validated data or the patch index: {outcomes}")
            print(f"Prefect server (not counted): {tree_rss(server.pid) / 1024**3:.2f} GiB")
        finally:
            stop(server)


if __name__ == "__main__":
    main()
