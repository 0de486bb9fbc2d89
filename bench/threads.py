"""Thread settings of the main job, compared: wall time, user and system CPU time of whole retraining runs.

Each arm is the same ``steelqc pipeline`` run (demo profile, auto-approved, a fresh state folder every time)
under different thread settings, given as environment variables: TensorFlow's own ``TF_NUM_INTRAOP_THREADS``
/ ``TF_NUM_INTEROP_THREADS`` (0 = TensorFlow decides), ``STEELQC_DATA__IMAGE_WORKERS``, OpenMP's
``OMP_NUM_THREADS``. The first arm is the baseline. Arms alternate round by round so a change of the shared
machine's load hits all of them alike; each arm's best round counts, and the load average is printed.
Oversubscribed threads show as system time (futex waits, context switches) growing against user time.

    .venv/bin/python -P bench/threads.py [--images 60] [--epochs 3] [--rounds 2]
        [--arm 'name:KEY=VALUE,KEY=VALUE' ...]   (default: steelqc's defaults vs a thread per core)
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

BIN = Path(sys.executable).parent
CPUS = len(os.sched_getaffinity(0))
# steelqc's defaults: TensorFlow's own choice of pools (intra-op and inter-op, each as large as the cores) and
# data.image_workers=4; the alternative gives TensorFlow one pool of a thread per core and as many image threads.
DEFAULT_ARMS = (
    "defaults:",
    f"thread-per-core:TF_NUM_INTRAOP_THREADS={CPUS},TF_NUM_INTEROP_THREADS=1,STEELQC_DATA__IMAGE_WORKERS={CPUS}",
)


@dataclass
class Sample:
    wall: float
    user: float
    system: float


def parse_arm(text: str) -> tuple[str, dict[str, str]]:
    name, _, pairs = text.partition(":")
    env = dict(pair.split("=", 1) for pair in pairs.split(",") if pair)
    return name, env


def run_once(data: Path, epochs: int, env_overrides: dict[str, str]) -> Sample:
    with tempfile.TemporaryDirectory(prefix="steelqc-threads-") as state:
        env = {**os.environ, "STEELQC_STATE_DIR": state, **env_overrides}
        command = [str(BIN / "steelqc"), "pipeline", str(data), "--config", "demo", "--auto-approve",
                   "--set", f"train.epochs_frozen={epochs}", "--set", f"train.patience={epochs}"]
        started = time.perf_counter()
        process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        _, status, usage = os.wait4(process.pid, 0)
        wall = time.perf_counter() - started
        stderr = process.stderr.read() if process.stderr else ""
        if os.waitstatus_to_exitcode(status) not in (0, 1):  # 1: the gate did not pass, the run itself finished
            sys.exit(f"pipeline failed ({os.waitstatus_to_exitcode(status)}): {stderr[-2000:]}")
        return Sample(wall, usage.ru_utime, usage.ru_stime)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=60, help="Generated strips (demo profile's generator)")
    parser.add_argument("--epochs", type=int, default=3, help="Training epochs per run")
    parser.add_argument("--rounds", type=int, default=2, help="Rounds; every arm runs once per round")
    parser.add_argument("--arm", action="append", help="name:KEY=VALUE,... (repeatable; the first is the baseline)")
    args = parser.parse_args()
    arms = [parse_arm(a) for a in (args.arm or DEFAULT_ARMS)]

    with tempfile.TemporaryDirectory(prefix="steelqc-threads-data-") as tmp:
        data = Path(tmp) / "data"
        subprocess.run([str(BIN / "steelqc"), "synth", "--out", str(data), "--images", str(args.images),
                        "--seed", "7", "--contrast", "1.6"], check=True, stdout=subprocess.DEVNULL)
        load_before = os.getloadavg()[0]
        samples: dict[str, list[Sample]] = {name: [] for name, _ in arms}
        for round_number in range(args.rounds):
            for name, env in arms:
                sample = run_once(data, args.epochs, env)
                samples[name].append(sample)
                print(f"round {round_number + 1} {name:<20} wall {sample.wall:6.1f} s  user {sample.user:6.1f} s  "
                      f"system {sample.system:6.1f} s  load {os.getloadavg()[0]:.1f}", flush=True)

    print(f"\nsteelqc pipeline, demo profile, {args.images} generated strips, {args.epochs} epochs; "
          f"best of {args.rounds} alternating rounds ({os.cpu_count()} CPUs)")
    base = min(s.wall for s in samples[arms[0][0]])
    for name, env in arms:
        best = min(samples[name], key=lambda s: s.wall)
        settings = ", ".join(f"{k}={v}" for k, v in env.items()) or "steelqc's defaults"
        print(f"{name:<20} wall {best.wall:6.1f} s ({best.wall / base:.2f}x baseline)  user {best.user:6.1f} s  "
              f"system {best.system:6.1f} s (system/user {best.system / max(best.user, 1e-9):.2f})  [{settings}]")
    print(f"load average at start {load_before:.1f}, at end {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
