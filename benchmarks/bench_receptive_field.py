"""Receptive-field maps: the colored map against the one-output-at-a-time loop, side by side.

The loop is what the anchors do (pytorch-made's check, the receptivefield library): one forward
and one backward per output position. Both methods get the same float64 model, the same random
inputs (a batch of 3, whose maps are united) and run in this one process, one after the other;
the script checks that the maps are equal and prints the ratio of wall times. Each case runs
``--repeat`` times (default 3), the two methods one after the other each time, so that a busy
machine slows both alike. The first run's colored map is the process's first, timed with its
one-time costs (what a user's first audit pays: that is what regressed, and what the target
is about); the later runs give the warm ratio (median).

    python benchmarks/bench_receptive_field.py            # dilated net at 2048, PixelCNN 28x28
    python benchmarks/bench_receptive_field.py --long     # also the dilated net at 8192

Target (issue 20): the dilated net at 2048 at least 20x faster than the loop (26.6x at
c2b8f41; 11.5x before the memory probe stopped importing ``torch._dynamo``).
"""

import argparse
import statistics
import time

import torch

from properties.evidence.gradients import DifferentiableInput, colored_map, random_directions
from properties.extra.zoo import zoo_subject
from properties.subject.calls import float64_copy


def loop_map(subject, inputs, seed=0):
    """One forward and one backward per output: the quadratic baseline."""
    source = DifferentiableInput(subject, inputs, seed=seed)
    n = subject.n_positions
    seen = torch.zeros(n, n, dtype=torch.bool)
    directions = None
    for t in range(n):
        leaf, y = source.run(1)
        if directions is None:
            directions = random_directions(y.shape, torch.Generator().manual_seed(seed + 1))
        cot = torch.zeros_like(y)
        cot[:, t] = directions[:, t]
        (g,) = torch.autograd.grad(y, leaf, cot)
        seen[t] = (g != 0).any(dim=0).any(dim=-1)
    return seen


TARGETS = {("nettoy1d_dilated", (2048,)): 20.0}  # speed-up at least


def compare(name, grid, repeat):
    subject, _ = float64_copy(zoo_subject(name, grid))
    subject.model.eval()
    x = subject.draw_inputs(3, torch.Generator().manual_seed(0))
    ratios, same = [], True
    for i in range(repeat):
        start = time.perf_counter()
        fast = colored_map(subject, x)
        t_fast = time.perf_counter() - start
        start = time.perf_counter()
        slow = loop_map(subject, x)
        t_slow = time.perf_counter() - start
        same &= torch.equal(fast.seen, slow)
        ratios.append(t_slow / t_fast)
        print(
            f"{name:18} grid {str(grid):10} run {i + 1}: loop {t_slow:7.2f} s "
            f"({subject.n_positions} passes)  colored {t_fast:6.2f} s ({fast.passes} passes, "
            f"{fast.method})  speed-up {t_slow / t_fast:6.1f}x  same map: {same}",
            flush=True,
        )
    first, warm = ratios[0], statistics.median(ratios[1:] or ratios)
    target = TARGETS.get((name, grid))
    verdict = "" if target is None else \
        f"  (target >= {target:.0f}x: {'ok' if first >= target else 'MISSED'})"
    print(f"{name:18} grid {str(grid):10} speed-up first run {first:6.1f}x{verdict}, "
          f"warm median {warm:6.1f}x", flush=True)
    return same and (target is None or first >= target)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--long", action="store_true", help="also length 8192 (slow loop)")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--repeat", type=int, default=3, help="runs per case (median ratio)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {args.threads} threads")
    cases = [("nettoy1d_dilated", (2048,)), ("pixelcnn", (28, 28))]
    if args.long:
        cases.insert(1, ("nettoy1d_dilated", (8192,)))
    ok = all([compare(name, grid, args.repeat) for name, grid in cases])
    raise SystemExit(0 if ok else 1)


if __name__ == "__main__":
    main()
