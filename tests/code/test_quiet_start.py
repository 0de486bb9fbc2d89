"""TensorFlow's start-up banner is kept off the entry points' console; nothing else written to stderr is lost."""

from __future__ import annotations

import subprocess
import sys

from steelqc.quiet_start import START_UP_NOISE


def test_only_the_known_start_up_lines_count_as_noise() -> None:
    banner = [
        b"WARNING: All log messages before absl::InitializeLog() is called are written to STDERR",
        b"I0000 00:00:1796508893.503358   28796 port.cc:153] oneDNN custom operations are on. You may see",
        b"I0000 00:00:1796508893.772852   28796 cpu_feature_guard.cc:227] This TensorFlow binary is optimized",
        b"To enable the following instructions: AVX2 AVX512F FMA, in other operations, rebuild TensorFlow",
        b"I0000 00:00:1796508396.703306   20218 cudart_stub.cc:31] Could not find cuda drivers on your machine",
    ]
    assert all(START_UP_NOISE.search(line) for line in banner)
    kept = [b"E0000 00:00:1.0 1 some_op.cc:12] a real TensorFlow error", b"Traceback (most recent call last):"]
    assert not any(START_UP_NOISE.search(line) for line in kept)


def test_importing_tensorflow_from_an_entry_point_prints_no_banner_but_keeps_other_stderr() -> None:
    script = (
        "import os, sys\n"
        "from steelqc.quiet_start import quiet_tensorflow_start, stderr_without, START_UP_NOISE\n"
        "quiet_tensorflow_start()\n"
        "import tensorflow\n"
        "with stderr_without(START_UP_NOISE):\n"
        "    os.write(2, b'written by C code during the import\\n')\n"
        "print('after the import', file=sys.stderr)\n"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, timeout=300, check=True)
    stderr = result.stderr.decode()
    assert "oneDNN" not in stderr and "InitializeLog" not in stderr, stderr
    assert "written by C code during the import" in stderr and "after the import" in stderr
