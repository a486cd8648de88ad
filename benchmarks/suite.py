#!/usr/bin/env python
"""How long the test suite takes, as a fresh clone runs it: README's test command with an empty pytest cache (no
recorded file times to order the files by), timed from outside, then each test file's seconds (setup, call and
teardown of its tests, summed over the workers that ran them) from pytest's JUnit XML.

    python benchmarks/suite.py                          # the whole suite
    python benchmarks/suite.py -m "not slow"            # the quick subset (any pytest arguments pass through)
    python benchmarks/suite.py --json suite.json -- -x  # the figures into a file as well

The suite cannot end before its longest file does (a file is one worker's, `--dist loadfile`), nor before the sum
over all files divided by the workers: both are printed beside the wall time. The machine is named as lscpu does,
with its cores and the CPU features that change the kernels (and so the time) the suite runs.
"""
from __future__ import annotations

import argparse
import collections
import json
import os
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ElementTree

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
KERNEL_FLAGS = ("avx2", "avx512f", "avx512_bf16", "amx_tile")


def machine() -> dict:
    """The CPU's model name and kernel-relevant flags (Linux's /proc/cpuinfo), the cores this process may use, and a
    oneDNN cap set in the environment."""
    model, flags = "unknown", set()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                key, _, value = line.partition(":")
                if key.strip() == "model name" and model == "unknown":
                    model = value.strip()
                elif key.strip() == "flags" and not flags:
                    flags = set(value.split())
    except OSError:
        pass
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return {"cpu_model": model, "cores": cores, "cpu_flags": [flag for flag in KERNEL_FLAGS if flag in flags],
            "onednn_max_cpu_isa": os.environ.get("ONEDNN_MAX_CPU_ISA")}


def read_junit(junit_xml: str) -> tuple[dict[str, float], list[str]]:
    """Seconds per test file from pytest's JUnit XML (each test's setup + call + teardown), and the tests that failed
    or raised an error."""
    seconds, failed = collections.Counter(), []
    for case in ElementTree.parse(junit_xml).getroot().iter("testcase"):
        # classname "tests.test_resume" (or "tests.test_resume.TestX"): the file is its first two parts
        path = ".".join(case.get("classname", "").split(".")[:2]).replace(".", "/") + ".py"
        seconds[path] += float(case.get("time", 0))
        if case.find("failure") is not None or case.find("error") is not None:
            failed.append(f"{path}::{case.get('name')}")
    return dict(seconds), failed


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--json", help="write the figures here too")
    args, pytest_args = parser.parse_known_args(argv)
    pytest_args = [arg for arg in pytest_args if arg != "--"]
    with tempfile.TemporaryDirectory() as scratch:
        junit = os.path.join(scratch, "junit.xml")
        command = [sys.executable, "-m", "pytest", "-q", "-o", f"cache_dir={os.path.join(scratch, 'cache')}",
                   f"--junitxml={junit}", *pytest_args]
        started = time.perf_counter()
        result = subprocess.run(command, cwd=REPO, capture_output=True, text=True)
        wall = time.perf_counter() - started
        summary = (result.stdout.strip().splitlines() or [""])[-1]
        per_file, failed = read_junit(junit) if os.path.exists(junit) else ({}, [])
    workers = min(4, machine()["cores"])  # setup.cfg: -n logical --maxprocesses 4
    figures = {"machine": machine(), "pytest_args": pytest_args, "exit_code": result.returncode, "summary": summary, "failed": failed,
               "wall_seconds": round(wall, 1), "workers": workers,
               "sum_of_files_seconds": round(sum(per_file.values()), 1),
               "files_seconds": {name: round(s, 1) for name, s in sorted(per_file.items(), key=lambda kv: -kv[1])}}
    m = figures["machine"]
    print(f"{m['cpu_model']}, {m['cores']} cores, {' '.join(m['cpu_flags']) or 'no AVX2'}"
          + (f", ONEDNN_MAX_CPU_ISA={m['onednn_max_cpu_isa']}" if m["onednn_max_cpu_isa"] else ""))
    for name, seconds in figures["files_seconds"].items():
        print(f"{seconds:8.1f} s  {name}")
    print(f"{figures['sum_of_files_seconds']:8.1f} s  all files ({figures['sum_of_files_seconds'] / workers:.1f} s "
          f"per worker over {workers})")
    if failed:  # pytest's own account of each failure, to stderr, for a rerun cannot be relied on to repeat it
        print(result.stdout[result.stdout.find("= FAILURES ="):] if "= FAILURES =" in result.stdout else result.stdout,
              file=sys.stderr)
    elif result.returncode != 0:  # nothing ran, or pytest stopped before its summary: say what it said
        print(result.stdout + result.stderr, file=sys.stderr)
    for test in failed:
        print(f"FAILED {test}")
    print(f"wall {figures['wall_seconds']:.1f} s: {summary}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(figures, f, indent=2)
    return figures


if __name__ == "__main__":
    sys.exit(0 if main()["exit_code"] == 0 else 1)
