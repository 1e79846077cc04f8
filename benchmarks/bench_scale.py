"""Audits at real sizes: GPT-2 small (124M) and a Llama-style model, random weights from configs.

Each audit runs as ``python -m properties audit ...`` in its own process, whose peak RSS is read
from the kernel (``os.wait4``). Its time is the report's ``seconds`` (start-up, imports and
building the model excluded), also as a multiple of one batch-1 forward pass of the same model at
the same length, timed in this process in the same run with the same thread count.

    python benchmarks/bench_scale.py            # the table in the README
    python benchmarks/bench_scale.py --quick    # GPT-2 small at 128 and Llama at 256 only

Targets (issue 20, 2 cores): GPT-2 small, default options, at 128 at most 10 forward passes and
at 1024 at most 20, exit 0, inclusive, proved, peak RSS <= 4 GB; the Llama-style model with
``--checks certificate`` at 16384 proved in at most 3 forward passes, peak RSS <= 3 GB more than
its forward pass alone.
"""

import argparse
import os
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from hf_audits import forward_seconds, run_audit  # noqa: E402

from properties.output.report import coverage_line  # noqa: E402

TARGETS = {"gpt2_small": 50257, "llama_small": 1000}
CERTIFICATE = ["--checks", "certificate"]
# Default options at every length (proof first: the certificate leads up to 16384 positions),
# and the certificate alone at the longest lengths (issue 20: Llama-style at 16384 in at most 3
# forward passes of time, its growth from 1024 no faster than the forward pass's).
CASES = [
    ("gpt2_small", 128, []),
    ("gpt2_small", 512, []),
    ("gpt2_small", 1024, []),
    ("llama_small", 128, []),
    ("llama_small", 1024, []),
    ("llama_small", 1024, CERTIFICATE),
    ("llama_small", 4096, CERTIFICATE),
    ("llama_small", 16384, CERTIFICATE),
]
QUICK = [("gpt2_small", 128, []), ("llama_small", 256, [])]


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
        f"{'model':12} {'length':>6} {'options':20} {'exit':>4} {'mode':9} {'cert':10} "
        f"{'audit s':>8} "
        f"{'x fwd':>6} {'fwd s':>6} {'wall s':>7} {'RSS GB':>6} {'passes':>6}  coverage"
    )
    print(header)
    print("-" * len(header))
    for name, length, extra in QUICK if args.quick else CASES:
        if args.model and name != args.model:
            continue
        fwd = forward_seconds(name, length, TARGETS[name])
        r = run_audit(name, length, TARGETS[name], extra)
        d = r["data"] or {}
        seconds = d.get("seconds", float("nan"))
        cov = d.get("coverage", {})
        line = coverage_line(cov) if cov else r["error"]
        cert = (d.get("certificate") or {}).get("status") or "-"
        print(
            f"{name:12} {length:>6} {' '.join(extra) or 'default':20} {r['code']:>4} "
            f"{d.get('mode') or '-':9} {cert:10} {seconds:>8.1f} {seconds / fwd:>6.1f} {fwd:>6.3f} "
            f"{r['wall']:>7.1f} {r['rss_gb']:>6.2f} {passes(cov):>6}  {line}",
            flush=True,
        )


if __name__ == "__main__":
    main()
