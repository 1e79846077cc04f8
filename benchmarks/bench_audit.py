"""The default audit of every registry model, its peak memory on a long sequence, and the test
suite's wall time: the numbers the README quotes, measured in one run.

    python benchmarks/bench_audit.py               # every registry model's default audit
    python benchmarks/bench_audit.py --memory      # + peak RSS of a length-8192 audit (subprocess)
    python benchmarks/bench_audit.py --suite       # + wall time of `pytest -n auto` (subprocess)

Targets (issue 5): each default audit under 10 s, the length-8192 audit under 2 GB, the suite
under 3 minutes on 2 cores. The script prints each measurement next to its target and the ratio.
"""

import argparse
import os
import subprocess
import sys
import time

import torch

from properties.auditing.gather import audit
from properties.extra.zoo import names, zoo_subject

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def audit_times() -> bool:
    ok = True
    for name in names():
        subject = zoo_subject(name)
        start = time.perf_counter()
        result = audit(subject)
        seconds = time.perf_counter() - start
        ok &= seconds < 10 and result.passed
        print(
            f"audit zoo:{name:18} {seconds:6.2f} s  (target 10 s: {seconds / 10:4.2f} of it)  "
            f"{'PASS' if result.passed else 'FAIL'}",
            flush=True,
        )
    return ok


PEAK = """
import resource, sys
from properties.cli import main
code = main(sys.argv[1:])
print("PEAK_KB", resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
sys.exit(code)
"""


def peak_memory(length: int = 8192) -> bool:
    """Each audit in a fresh process that reports its own peak resident set size."""
    ok = True
    for name in ("nettoy1d_dilated", "wavenet"):
        argv = ["audit", f"zoo:{name}", "--length", str(length)]
        start = time.perf_counter()
        proc = subprocess.run(
            [sys.executable, "-c", PEAK, *argv], capture_output=True, text=True, cwd=ROOT
        )
        seconds = time.perf_counter() - start
        lines = [x for x in proc.stdout.splitlines() if x.startswith("PEAK_KB")]
        peak_mb = int(lines[-1].split()[1]) / 1024 if lines else float("nan")  # KB on Linux
        ok &= peak_mb < 2048 and proc.returncode == 0
        print(
            f"audit zoo:{name} --length {length}: peak RSS {peak_mb:7.0f} MB  "
            f"(target 2048 MB: {peak_mb / 2048:4.2f} of it), {seconds:5.1f} s, "
            f"exit {proc.returncode}",
            flush=True,
        )
    return ok


def suite_time() -> bool:
    env = dict(os.environ, HYPOTHESIS_PROFILE="ci")
    start = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-n", "auto", "-q"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=env,
    )
    seconds = time.perf_counter() - start
    summary = proc.stdout.strip().splitlines()[-1] if proc.stdout.strip() else proc.stderr[-200:]
    print(
        f"pytest -n auto ({os.cpu_count()} cores): {seconds:6.1f} s  "
        f"(target 180 s: {seconds / 180:4.2f} of it)  {summary}",
        flush=True,
    )
    return seconds < 180 and proc.returncode == 0


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--memory", action="store_true", help="peak RSS at length 8192")
    parser.add_argument("--suite", action="store_true", help="wall time of the test suite")
    args = parser.parse_args()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {os.cpu_count()} cores")
    ok = audit_times()
    if args.memory:
        ok &= peak_memory()
    if args.suite:
        ok &= suite_time()
    raise SystemExit(0 if ok else 1)


if __name__ == "__main__":
    main()
