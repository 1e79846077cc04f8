"""Training steps per second of every model of ``causal experiments``, on its data, one thread.

``python -m causal experiments --minutes M`` turns M minutes into ``M * 60 * rate`` optimizer
steps per model, with the rates of ``causal.experiments.STEPS_PER_SECOND``; this script measures
them (batch 32, the training split's batches, AdamW, deterministic kernels, one thread: what an
experiment run does) and prints them next to the table's, with their ratio. Rates measured on a
busy machine come out low; the table holds rates of a quiet 2-core machine, rounded down.

    python benchmarks/bench_step_rates.py               # 5 s per model
    python benchmarks/bench_step_rates.py --seconds 2
"""

import argparse
import time

import torch

from causal.experiments import MODELS, STEPS_PER_SECOND, deterministic, load_data
from causal.train import build_model, sequence_loss, set_normalization


def steps_per_second(name: str, seconds: float) -> float:
    dataset = load_data(MODELS[name])
    torch.manual_seed(0)
    model = build_model(name, dataset.nb_classes, dataset.grid)
    set_normalization(model, dataset.mean, dataset.std)
    optimizer = torch.optim.AdamW(model.parameters(), lr=2e-3, weight_decay=0.5)
    batches = dataset.train.split(32)
    steps, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        loss = sequence_loss(model, batches[steps % len(batches)])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        steps += 1
    return steps / (time.perf_counter() - start)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=5.0, help="measuring time per model")
    args = parser.parse_args()
    print(f"{'model':17} {'measured':>9} {'table':>6} {'ratio':>6}  (steps/s, one thread)")
    with deterministic():
        for name in MODELS:
            rate = steps_per_second(name, args.seconds)
            table = STEPS_PER_SECOND[name]
            print(f"{name:17} {rate:9.1f} {table:6d} {rate / table:6.2f}", flush=True)


if __name__ == "__main__":
    main()
