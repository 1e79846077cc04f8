"""Audits at real sizes: GPT-2 small (124M) and a Llama-style model, random weights from configs.

Each audit runs as ``python -m properties audit ...`` in its own process, whose peak RSS is read
from the kernel (``os.wait4``). Its time is the report's ``seconds`` (start-up, imports and
building the model excluded), also as a multiple of one batch-1 forward pass of the same model at
the same length, timed in this process in the same run with the same thread count.

    python benchmarks/bench_scale.py            # the table in the README
    python benchmarks/bench_scale.py --quick    # GPT-2 small at 128 and Llama at 256 only

Targets (issue 8): GPT-2 small at 128, default options: exit 0, inclusive, peak RSS <= 4 GB,
time <= 600 forward passes. GPT-2 small at 1024 with ``--budget 300``: ends within 330 s plus
start-up, peak RSS <= 6 GB, exit 0. Llama-style at 256: exit 0, inclusive.
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests" / "targets"))
sys.path.insert(0, str(ROOT))

import hf_models  # noqa: E402

from properties.output.report import coverage_line  # noqa: E402

TARGETS = {"gpt2_small": 50257, "llama_small": 1000}
CASES = [
    ("gpt2_small", 128, []),
    ("gpt2_small", 512, ["--budget", "300"]),
    ("gpt2_small", 1024, ["--budget", "300"]),
    ("llama_small", 128, []),
    ("llama_small", 256, []),
    ("llama_small", 512, []),
    ("llama_small", 1024, ["--budget", "120"]),
]
QUICK = [("gpt2_small", 128, []), ("llama_small", 256, [])]


def forward_seconds(name: str, length: int) -> float:
    """One batch-1 forward pass of the model at ``length``, best of three."""
    model = getattr(hf_models, name)().eval()
    x = torch.randint(TARGETS[name], (1, length))
    best = float("inf")
    with torch.no_grad():
        model(x)
        for _ in range(3):
            start = time.perf_counter()
            model(x)
            best = min(best, time.perf_counter() - start)
    return best


def run_audit(name: str, length: int, extra: list[str]) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "report.json"
        argv = [
            sys.executable, "-m", "properties", "audit",
            f"tests/targets/hf_models.py:{name}", "--layout", "BT",
            "--vocab", str(TARGETS[name]), "--length", str(length),
            "--output", "logits", "--predicts", "next", "--quiet", "--json", str(out), *extra,
        ]  # fmt: skip
        start = time.perf_counter()
        child = subprocess.Popen(argv, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        _, status, usage = os.wait4(child.pid, 0)
        wall = time.perf_counter() - start
        err = child.stderr.read().decode().strip()
        child.stderr.close()
        data = json.loads(out.read_text()) if out.exists() else None
    return {
        "code": os.waitstatus_to_exitcode(status),
        "wall": wall,
        "rss_gb": usage.ru_maxrss * 1024 / 2**30,
        "data": data,
        "error": err.splitlines()[-1] if err else "",
    }


def passes(coverage: dict) -> int:
    """Forward/VJP passes of one copy of the inputs: map rows (x inputs), cuts, examples."""
    total = 0
    for g in coverage.get("gradient", {}).values():
        if isinstance(g, dict):
            total += g["passes"] * g["inputs"]
    for p in coverage.get("perturbation", {}).values():
        if isinstance(p, dict):
            total += p["cuts_swept"] + p["hypothesis_examples"]
    return total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="two cases only")
    parser.add_argument("--model", choices=sorted(TARGETS), help="this model's cases only")
    args = parser.parse_args()
    print(f"torch threads: {torch.get_num_threads()}, cpus: {os.cpu_count()}")
    header = (
        f"{'model':12} {'length':>6} {'options':14} {'exit':>4} {'mode':9} {'audit s':>8} "
        f"{'x fwd':>6} {'fwd s':>6} {'wall s':>7} {'RSS GB':>6} {'passes':>6}  coverage"
    )
    print(header)
    print("-" * len(header))
    for name, length, extra in QUICK if args.quick else CASES:
        if args.model and name != args.model:
            continue
        fwd = forward_seconds(name, length)
        r = run_audit(name, length, extra)
        d = r["data"] or {}
        seconds = d.get("seconds", float("nan"))
        cov = d.get("coverage", {})
        line = coverage_line(cov) if cov else r["error"]
        print(
            f"{name:12} {length:>6} {' '.join(extra) or 'default':14} {r['code']:>4} "
            f"{d.get('mode') or '-':9} {seconds:>8.1f} {seconds / fwd:>6.0f} {fwd:>6.3f} "
            f"{r['wall']:>7.1f} {r['rss_gb']:>6.2f} {passes(cov):>6}  {line}",
            flush=True,
        )


if __name__ == "__main__":
    main()
