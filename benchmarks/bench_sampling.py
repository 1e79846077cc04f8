"""Sampling with the cached steppers against the lecture's full recompute, side by side.

Both runs get the same model (seeded, untrained), the same seed and dtype (float64 by default, so
that "identical samples" is a meaningful check) and run in this one process, one after the other;
the script prints both wall times, their ratio and whether the samples are identical (exit 1 if
float64 samples are not). The models run on the CPU.

    python benchmarks/bench_sampling.py              # WaveNet 8 x 1024, PixelCNNs 4 x 28x28, toys
    python benchmarks/bench_sampling.py --quick      # WaveNet 2 x 256, PixelCNNs 2 x 12x12
    python benchmarks/bench_sampling.py --threads 1  # torch's intra-op threads (default: torch's)
"""

import argparse
import time

import torch

from causal import registry
from causal.sample import DTYPES, sample

# name -> (number of samples, grid), full and quick
RUNS = {
    "wavenet": ((8, (1024,)), (2, (256,))),
    "pixelcnn": ((4, (28, 28)), (2, (12, 12))),
    "pixelcnn_pe": ((4, (28, 28)), (2, (12, 12))),
    "pixelcnn_gated": ((4, (28, 28)), (2, (12, 12))),
    "pixelcnn_masked": ((4, (28, 28)), (2, (12, 12))),
    "nettoy1d": ((8, (64,)), (8, (64,))),
    "nettoy1d_dilated": ((8, (64,)), (8, (64,))),
}


def timed(model, nb, grid, dtype, cache):
    start = time.perf_counter()
    samples = sample(model, nb, grid, seed=0, dtype=dtype, cache=cache)
    return samples, time.perf_counter() - start


def compare(name, nb, grid, dtype):
    torch.manual_seed(0)
    model = registry.get(name).make(grid=grid)
    cached, t_cached = timed(model, nb, grid, dtype, cache=True)
    full, t_full = timed(model, nb, grid, dtype, cache=False)
    same = torch.equal(cached, full)
    print(
        f"{name:17} {nb} x {str(grid):9} full recompute {t_full:7.2f} s  cached {t_cached:6.3f} s  "
        f"speed-up {t_full / t_cached:6.1f}x  identical samples: {same}",
        flush=True,
    )
    return same


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller grids, for a smoke test")
    parser.add_argument("--threads", type=int, help="torch intra-op threads (default: torch's)")
    parser.add_argument("--dtype", choices=DTYPES, default="float64")
    parser.add_argument("--models", nargs="+", choices=RUNS, default=list(RUNS))
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} thread(s), {args.dtype}, CPU")
    same = [compare(name, *RUNS[name][args.quick], DTYPES[args.dtype]) for name in args.models]
    # float64 draws must agree; float32 ones may part where the cache rounds differently
    return 0 if all(same) or args.dtype != "float64" else 1


if __name__ == "__main__":
    raise SystemExit(main())
