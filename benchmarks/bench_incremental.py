"""The incremental check against one full pass, side by side in one run: GPT-2 small (124M,
random weights) at 512 tokens, its dynamic and its static cache.

    python benchmarks/bench_incremental.py                     # 512 tokens, 25 examples
    python benchmarks/bench_incremental.py --length 128 --max-examples 100
    python benchmarks/bench_incremental.py --budget 120        # what a --budget run covers

Prints the full pass (batch 1, best of two), the check's wall time and their ratio, the calls
of the stepper, the positions they ran (against the n of one full pass), the schedules and
Hypothesis examples, and the verdict with its largest difference against the tolerance. The
check's cost is one full pass plus its schedules' steps: token by token is n calls of one
position each, so the ratio is mostly what per-call overhead costs against a batched pass.
"""

import argparse
import os
import sys
import time

import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)  # this checkout's properties, not an installed one
sys.path.insert(0, f"{ROOT}/tests/targets")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--length", type=int, default=512)
    parser.add_argument("--max-examples", type=int, default=25)
    parser.add_argument("--budget", type=float, default=None)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    import hf_models
    from transformers.utils import logging

    from properties import audit_model

    logging.set_verbosity_error()
    model = hf_models.gpt2_small().eval()
    tokens = torch.randint(50257, (1, args.length), generator=torch.Generator().manual_seed(0))
    forwards = []
    with torch.no_grad():
        for _ in range(2):
            start = time.perf_counter()
            model(tokens)
            forwards.append(time.perf_counter() - start)
    forward = min(forwards)

    start = time.perf_counter()
    result = audit_model(
        model, grid=(args.length,), layout="BT", vocab=50257, output="logits",
        checks=("incremental",), max_examples=args.max_examples, budget=args.budget,
    )
    wall = time.perf_counter() - start
    rep = result.incremental
    positions = sum(
        o.schedule.n + (o.schedule.continuations - 1) * (o.schedule.n - o.schedule.branch.at)
        if o.schedule.branch else o.schedule.n for o in rep.tried
    )
    worst = max(rep.tried, key=lambda o: o.max_diff)
    print(f"GPT-2 small, {args.length} tokens, {torch.get_num_threads()} threads, variants: "
          f"{', '.join(rep.variants)}")
    print(f"  one full pass:     {forward:8.2f} s")
    print(f"  incremental check: {wall:8.2f} s  = {wall / forward:.1f} full passes "
          f"(the check's own clock: {rep.seconds:.2f} s; its full pass {rep.full_seconds:.2f} s)")
    print(f"  stepper calls:     {rep.steps:8d}  ({wall / max(rep.steps, 1) * 1e3:.1f} ms each on "
          f"average), {positions} positions run = {positions / args.length:.1f} x n")
    print(f"  schedules:         {len(rep.tried):8d}  ({rep.fixed} fixed, {rep.examples} from "
          f"Hypothesis; {rep.rounding} rounding-only, confirmed in float64)"
          + ("; cut short by the budget" if rep.budgeted else ""))
    verdict = "holds" if rep.holds else f"DIVERGES: {rep.divergence.schedule.describe()}"
    print(f"  verdict:           {verdict}; largest difference {worst.max_diff:.3g} "
          f"(tolerance {rep.tolerance:.3g}, {worst.max_diff / rep.tolerance:.3f} of it) on "
          f"{worst.schedule.describe(rep.variants)[:60]}")


if __name__ == "__main__":
    main()
