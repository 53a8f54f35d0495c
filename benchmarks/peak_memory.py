"""A benchmark's child process run under ``/usr/bin/time -v``: its JSON report and its
peak resident memory (shared by ``big_population.py`` and ``checkpoint_memory.py``)."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time


def run_child(arguments: list[str], *, agents: int, what: str = "child", env=None) -> dict:
    """Run ``python ARGUMENTS`` under ``/usr/bin/time -v``; the last line it prints (a
    JSON object) with ``wall_s`` and the peak resident memory, in bytes, GiB and bytes per
    agent of ``agents``. Exits naming ``what`` when the child fails."""
    command = ["/usr/bin/time", "-v", sys.executable, *arguments]
    begun = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, env=env)
    wall = time.perf_counter() - begun
    if done.returncode != 0:
        raise SystemExit(f"{what} failed ({done.returncode}):\n{done.stderr[-4000:]}")
    peak_kb = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", done.stderr)[1])
    return {
        **json.loads(done.stdout.strip().splitlines()[-1]),
        "wall_s": wall,
        "peak_rss_bytes": peak_kb * 1024,
        "peak_rss_gib": peak_kb / 2**20,
        "peak_bytes_per_agent": peak_kb * 1024 / agents,
    }
