"""The default audit leads with the proof: its cost in forward passes, on GPT-2 small.

Each audit runs as ``python -m properties audit ...`` with default options in its own process,
whose peak RSS is read from the kernel (``os.wait4``). Its time is the report's ``seconds``
(start-up, imports and building the model excluded), as a multiple of one batch-1 forward pass of
the same model at the same length, timed in this process just before, with the same threads.

    python benchmarks/bench_default_audit.py            # the three cases below
    python benchmarks/bench_default_audit.py --exact    # the same, with --exact (slow: minutes)

Targets (issue 20, 2 cores): GPT-2 small, default options, at 128 positions at most 10 forward
passes and at 1024 at most 20, exit 0, inclusive, proved, peak RSS at most 4 GB; the same model
with one layer's mask made bidirectional (``hf_models.gpt2_small_leaky``) at 1024: exit 1, a
concrete counterexample, the module where the future entered named, at most 30 forward passes.
"""

import argparse
import os
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from hf_audits import forward_seconds, run_audit  # noqa: E402

from properties.output.report import coverage_line  # noqa: E402

VOCAB = 50257
# (model, length, exit code expected, most forward passes)
CASES = [
    ("gpt2_small", 128, 0, 10),
    ("gpt2_small", 1024, 0, 20),
    ("gpt2_small_leaky", 1024, 1, 30),
]
RSS_GB = 4.0


def findings(data: dict) -> str:
    """What a failing audit showed: the first counterexample and where the future entered."""
    cert = data.get("certificate") or {}
    op = next((f["op"] for f in cert.get("forbidden", []) if f.get("op")), None)
    examples = data.get("counterexamples") or {}
    first = next(iter(examples.values()), None)
    violation = next((v for v in data.get("violations", []) if v["kind"] == "future"), None)
    parts = []
    if first:
        parts.append(f"counterexample: {first['description']}")
    if violation:
        parts.append(
            f"output {violation['output']} on input {violation['input']} ({violation['evidence']})"
        )
    parts.append(f"entered at: {op}")
    return "; ".join(parts)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--exact", action="store_true", help="audit with --exact as well")
    args = parser.parse_args()
    print(f"torch threads: {torch.get_num_threads()}, cpus: {os.cpu_count()}")
    header = (
        f"{'model':17} {'length':>6} {'options':8} {'exit':>4} {'mode':9} {'cert':10} "
        f"{'audit s':>8} {'fwd s':>6} {'x fwd':>6} {'target':>6} {'RSS GB':>6}  coverage"
    )
    print(header)
    print("-" * len(header))
    ok = True
    for name, length, code, most in CASES:
        for extra in ([], ["--exact"]) if args.exact else ([],):
            fwd = forward_seconds(name, length, VOCAB)
            r = run_audit(name, length, VOCAB, extra)
            d = r["data"]
            seconds = d.get("seconds", float("nan"))
            ratio = seconds / fwd
            cert = (d.get("certificate") or {}).get("status", "-")
            cov = d.get("coverage")
            met = r["code"] == code and r["rss_gb"] <= RSS_GB and (extra or ratio <= most)
            ok = ok and bool(met)
            print(
                f"{name:17} {length:>6} {' '.join(extra) or 'default':8} {r['code']:>4} "
                f"{d.get('mode') or '-':9} {cert:10} {seconds:>8.1f} {fwd:>6.3f} {ratio:>6.1f} "
                f"{'-' if extra else most:>6} {r['rss_gb']:>6.2f}  "
                f"{coverage_line(cov) if cov else r['error']}"
                + ("" if met else "  <-- MISSED"),
                flush=True,
            )
            if r["code"] == 1:
                print(f"{'':17} {findings(d)}", flush=True)
    print("all targets met" if ok else "some targets missed")


if __name__ == "__main__":
    main()
