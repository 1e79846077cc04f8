"""The lecture's claims, measured (``python -m causal experiments``).

Two claims the lecture shows only as pictures of samples:

- slides 18-20: the toy net (receptive field 5) "may not properly generate the global structure";
  dilated convolutions "have a larger context" and fix it;
- slides 23-25: a fully convolutional PixelCNN "has no way to make the prediction
  position-dependent": local consistency, but fragmentation; a Boolean positional encoding fixes
  it.

Every model below is trained on the same budget and seeds, then measured: test NLL (nats per
sequence/image and bits per dimension), the receptive field the audit (:mod:`properties`)
measures on the data's grid, and a global-structure score of its samples that does not depend on
the model (:mod:`causal.structure`). Pictures put samples next to test data.

**Budget.** ``minutes`` is turned into a number of optimizer steps per model from the step rates
:data:`STEPS_PER_SECOND` measured on a 2-core CPU with one thread
(``benchmarks/bench_step_rates.py``). A wall-clock cut would make the result depend on the
machine's load; a step budget gives the same ``results.json`` for the same seeds on a busy machine
(it only takes longer). Early stopping on the validation NLL (:mod:`causal.train`) often ends a
run before its budget.

**Determinism.** Each run uses one thread and ``torch.use_deterministic_algorithms``; runs are
independent processes (``jobs``), so how many run at once does not change any number. Wall-clock
times go to ``run.json``, never to ``results.json``.
"""

import functools
import json
import math
import platform
import statistics
import time
from concurrent.futures import ProcessPoolExecutor
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from multiprocessing import get_context
from pathlib import Path

import torch

from . import data as data_module
from . import registry
from .figures import side_by_side
from .sample import sample
from .structure import DigitScorer, toy_structure
from .train import (
    CHECKPOINT_NAME,
    METRICS_NAME,
    TrainConfig,
    bits_per_dim,
    checkpoint_config,
    load_checkpoint,
    nll_nats,
    save_checkpoint,
    seeded_model,
    train,
)

# model -> data set, in the order of the table
MODELS = {
    "nettoy1d": "toy",
    "nettoy1d_dilated": "toy",
    "wavenet": "toy",
    "pixelcnn": "digits",
    "pixelcnn_pe": "digits",
    "pixelcnn_masked": "digits",
    "pixelcnn_gated": "digits",
}

# Training steps per second (batch 32, one thread, the data's grid), rounded down: measured with
# `python benchmarks/bench_step_rates.py` on the project's 2-core machine.
STEPS_PER_SECOND = {
    "nettoy1d": 400,
    "nettoy1d_dilated": 380,
    "wavenet": 90,
    "pixelcnn": 160,
    "pixelcnn_pe": 155,
    "pixelcnn_masked": 75,
    "pixelcnn_gated": 50,
}

PICTURE_ITEMS = {"toy": 8, "digits": 16}  # samples per model in the side-by-side pictures
RESULTS_NAME, TABLE_NAME, RUN_NAME = "results.json", "results.md", "run.json"


@dataclass(frozen=True)
class ExperimentConfig:
    minutes: float = 0.5  # training budget per model and seed, in minutes of the reference rate
    seeds: int = 3  # training seeds 0 .. seeds - 1
    samples: int = 500  # samples per model and seed for the structure score
    jobs: int = 2  # runs in parallel (processes, one thread each)

    def steps(self, name: str) -> int:
        """The step budget of ``name``: ``minutes`` at its reference step rate, at least one."""
        return max(1, round(self.minutes * 60 * STEPS_PER_SECOND[name]))


@dataclass(frozen=True)
class Task:
    """One training run: a model on its data set under one seed."""

    model: str
    data: str
    seed: int
    steps: int
    samples: int
    out: str


# ---------------------------------------------------------------------------------------------
# One run (in a worker process, or in this one with jobs=1)


@functools.cache
def load_data(name: str):
    """A data set, loaded once per process (every run of a process reads the same splits)."""
    return data_module.load(name)


@contextmanager
def deterministic(threads: int = 1):
    """One thread count and deterministic kernels for the duration; the caller's settings are
    restored afterwards (a CPU reduction may split its sum differently with another count)."""
    old_threads, old_flag = torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()
    torch.set_num_threads(threads)
    torch.use_deterministic_algorithms(True)
    try:
        yield
    finally:
        torch.set_num_threads(old_threads)
        torch.use_deterministic_algorithms(old_flag)


def run_task(task: Task) -> dict:
    """Trains, evaluates and samples one model under one seed; writes its run directory
    (``checkpoint.pt``, ``metrics.json``, ``samples.pt``) and returns the numbers and samples.

    Like :func:`causal.train.run`, but only the test split is evaluated at the end: the training
    split's NLL would cost more than a short run's training and no claim needs it.
    """
    start = time.perf_counter()
    out = Path(task.out)
    out.mkdir(parents=True, exist_ok=True)
    with deterministic():
        dataset = load_data(task.data)
        config = TrainConfig(model=task.model, data=task.data, steps=task.steps, seed=task.seed)
        model = seeded_model(task.model, dataset, task.seed)
        result = train(model, dataset, config, progress=False)
        test_nll = nll_nats(result.model, dataset.test, config.eval_batch_size)
        # the cached sampler: one new position per step (causal.incremental)
        samples = sample(result.model, task.samples, dataset.grid, seed=task.seed, cache=True)
    save_checkpoint(out / CHECKPOINT_NAME, result.model, checkpoint_config(task.model, dataset))
    torch.save(samples, out / "samples.pt")
    numbers = {
        "test_nll_nats": test_nll,
        "test_bits_per_dim": bits_per_dim(test_nll, dataset.grid),
        "uniform_nll_nats": math.prod(dataset.grid) * math.log(dataset.nb_classes),
        "epochs": result.epochs,
        "best_epoch": result.best_epoch,
        "steps": result.steps,
        "nb_parameters": sum(p.numel() for p in result.model.parameters()),
    }
    metrics = {**numbers, "config": asdict(config), "history": result.history}
    (out / METRICS_NAME).write_text(json.dumps(metrics, indent=2) + "\n")
    return {"task": task, **numbers, "samples": samples, "seconds": time.perf_counter() - start}


def run_tasks(tasks: list[Task], jobs: int, log=print) -> list[dict]:
    """Every task, in ``jobs`` processes (spawned: a forked torch can hang in its thread pool)."""
    outputs = []
    if jobs <= 1:
        for task in tasks:
            outputs.append(run_task(task))
            _log_run(outputs[-1], len(outputs), len(tasks), log)
        return outputs
    with ProcessPoolExecutor(max_workers=jobs, mp_context=get_context("spawn")) as pool:
        for output in pool.map(run_task, tasks):
            outputs.append(output)
            _log_run(output, len(outputs), len(tasks), log)
    return outputs


def _log_run(output, done, total, log):
    task = output["task"]
    log(
        f"[{done}/{total}] {task.model} seed {task.seed}: test NLL "
        f"{output['test_nll_nats']:.2f} nats, {output['steps']} steps, "
        f"{output['seconds']:.0f} s"
    )


# ---------------------------------------------------------------------------------------------
# Scores, receptive fields, aggregation


def audited_receptive_field(name: str, run_dir) -> dict:
    """The receptive field (and blind spot, 2D) the audit measures on the trained model, on the
    grid it was trained on."""
    import properties

    model, config = load_checkpoint(run_dir)
    spec = registry.get(name)
    grid, nb_classes = tuple(config["grid"]), config["nb_classes"]
    with deterministic():
        result = properties.audit_model(
            model,
            grid=grid,
            layout=spec.layout,
            predicts="current",
            classes=nb_classes,
            value_range=(0.0, float(nb_classes - 1)),
            checks=("receptive_field", "blind_spot"),
        )
    rf = result.receptive_field
    return {
        "grid": list(grid),
        "size": rf.size,
        "span": rf.span,
        "holes": rf.holes,
        "max_span": rf.max_span,
        "blind_spot": None if result.blind_spot is None else result.blind_spot.size,
    }


class Scorers:
    """The model-free structure scores, one per data set, fitted once."""

    def __init__(self, datasets: dict):
        self.datasets = datasets
        self._digits = None

    def digits(self) -> DigitScorer:
        if self._digits is None:
            train, _, test = data_module.load_digit_labels()
            d = self.datasets["digits"]
            self._digits = DigitScorer.fit(d.train, train, d.test, test, d.nb_classes)
        return self._digits

    def score(self, data: str, samples: torch.Tensor) -> dict:
        dataset = self.datasets[data]
        if data == "toy":
            return toy_structure(samples, dataset.test)
        return self.digits().score(samples)

    def reference(self, data: str) -> dict:
        """The score of held-out data: what a perfect generator would reach (toy: the
        validation split against the test split; digits: the test split itself)."""
        dataset = self.datasets[data]
        if data == "toy":
            return toy_structure(dataset.val, dataset.test)
        scores = self.digits().score(dataset.test)
        return {**scores, "classifier_test_accuracy": self.digits().test_accuracy}


def _mean_std(values: list[float]) -> tuple[float, float]:
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def aggregate(name: str, runs: list[dict], scores: list[dict], reference: dict, rf: dict) -> dict:
    """One model's entry of results.json: means and spreads over seeds, and every seed."""
    nll, nll_std = _mean_std([r["test_nll_nats"] for r in runs])
    bpd, bpd_std = _mean_std([r["test_bits_per_dim"] for r in runs])
    structure, structure_std = _mean_std([s["structure"] for s in scores])
    details = {key: statistics.fmean(s[key] for s in scores) for key in scores[0]}
    return {
        "data": MODELS[name],
        "seeds": [r["task"].seed for r in runs],
        "step_budget": runs[0]["task"].steps,
        "test_nll_nats": nll,
        "test_nll_std": nll_std,
        "test_bits_per_dim": bpd,
        "test_bits_per_dim_std": bpd_std,
        "uniform_nll_nats": runs[0]["uniform_nll_nats"],
        "structure": structure,
        "structure_std": structure_std,
        "structure_details": details,
        "structure_data": reference["structure"],
        "structure_data_details": reference,
        "receptive_field": rf,
        "nb_parameters": runs[0]["nb_parameters"],
        "per_seed": [
            {
                "seed": r["task"].seed,
                "test_nll_nats": r["test_nll_nats"],
                "test_bits_per_dim": r["test_bits_per_dim"],
                "epochs": r["epochs"],
                "best_epoch": r["best_epoch"],
                "steps": r["steps"],
                **s,
            }
            for r, s in zip(runs, scores, strict=True)
        ],
    }


# ---------------------------------------------------------------------------------------------
# The whole experiment


def run_experiments(config: ExperimentConfig, out, log=print) -> dict:
    """Trains every model of :data:`MODELS` under every seed, scores, audits, and writes
    ``results.json``, ``results.md``, ``run.json`` and the pictures into ``out``; returns the
    results (keyed by model name)."""
    start = time.perf_counter()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    tasks = [
        Task(
            name,
            data,
            seed,
            config.steps(name),
            config.samples,
            str(out / "runs" / name / f"{seed}"),
        )
        for name, data in MODELS.items()
        for seed in range(config.seeds)
    ]
    outputs = run_tasks(tasks, config.jobs, log)
    trained = time.perf_counter()
    datasets = {data: load_data(data) for data in sorted(set(MODELS.values()))}
    scorers = Scorers(datasets)
    results = {}
    for name, data in MODELS.items():
        runs = [o for o in outputs if o["task"].model == name]
        scores = [scorers.score(data, r["samples"]) for r in runs]
        rf = audited_receptive_field(name, runs[0]["task"].out)
        results[name] = aggregate(name, runs, scores, scorers.reference(data), rf)
    (out / RESULTS_NAME).write_text(json.dumps(results, indent=2) + "\n")
    (out / TABLE_NAME).write_text(markdown_table(results, config))
    write_pictures(out, outputs, datasets)
    seconds = {
        "total": time.perf_counter() - start,
        "training_and_sampling": trained - start,
        "runs": {f"{o['task'].model}/{o['task'].seed}": o["seconds"] for o in outputs},
    }
    run_info = {"config": asdict(config), "steps": {n: config.steps(n) for n in MODELS}}
    run_info.update(seconds=seconds, machine=_machine())
    (out / RUN_NAME).write_text(json.dumps(run_info, indent=2) + "\n")
    log(f"wrote {out / RESULTS_NAME}, {out / TABLE_NAME} and pictures in {seconds['total']:.0f} s")
    return results


def _machine() -> dict:
    import os

    return {
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpus": os.cpu_count(),
        "torch": torch.__version__,
    }


def write_pictures(out: Path, outputs: list[dict], datasets: dict) -> None:
    """Per data set, ``DATA.png``: the first seed's samples of every model next to test items."""
    first_seed = min(o["task"].seed for o in outputs)
    for data, dataset in datasets.items():
        items = PICTURE_ITEMS[data]
        columns = {"test data": dataset.test[:items]}
        for o in outputs:
            if o["task"].data == data and o["task"].seed == first_seed:
                columns[o["task"].model] = o["samples"][:items]
        title = f"{data}: test data and samples (seed {first_seed})"
        side_by_side(columns, out / f"{data}.png", dataset.nb_classes, title=title)


# ---------------------------------------------------------------------------------------------
# The table


def markdown_table(results: dict, config: ExperimentConfig) -> str:
    """results.md: one row per model, the held-out data's structure score as the reference."""
    lines = [
        f"Budget: {config.minutes:g} min per model and seed (as steps at the reference rate), "
        f"seeds 0..{config.seeds - 1}, {config.samples} samples per model and seed; "
        "mean ± std over seeds.",
        "",
        "| model | data | test NLL (nats) | bits/dim | receptive field (audited) "
        "| structure (samples) | structure (held-out data) |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, r in results.items():
        lines.append(
            f"| `{name}` | {r['data']} | {r['test_nll_nats']:.2f} ± {r['test_nll_std']:.2f} "
            f"| {r['test_bits_per_dim']:.3f} ± {r['test_bits_per_dim_std']:.3f} "
            f"| {describe_rf(r['receptive_field'])} "
            f"| {r['structure']:.3f} ± {r['structure_std']:.3f} | {r['structure_data']:.3f} |"
        )
    lines += ["", *details_table(results)]
    lines += [
        "",
        "Structure: toy, 1 - mean KS distance of the flat-stretch lengths and of the number of "
        "bumps, samples vs test split; digits, mean top-class probability of a logistic "
        "regression trained on the training digits. Higher is more like held-out data.",
    ]
    return "\n".join(lines) + "\n"


# data set -> (key in structure_details, column title), for the details table
DETAILS = {
    "toy": [
        ("ks_flat_stretches", "KS flat stretches"),
        ("ks_bumps", "KS bumps"),
        ("mean_bumps", "bumps per sequence"),
    ],
    "digits": [
        ("confident", "share with p > 0.9"),
        ("class_entropy_bits", "entropy of predicted classes (bits)"),
    ],
}


def details_table(results: dict) -> list[str]:
    """The parts of the structure score, per data set, held-out data in the first row."""
    lines = []
    for data, columns in DETAILS.items():
        entries = {n: r for n, r in results.items() if r["data"] == data}
        if not entries:
            continue
        reference = next(iter(entries.values()))["structure_data_details"]
        lines += [
            f"| {data} | " + " | ".join(title for _, title in columns) + " |",
            "|---|" + "---|" * len(columns),
            "| held-out data | " + " | ".join(f"{reference[k]:.3f}" for k, _ in columns) + " |",
        ]
        for name, r in entries.items():
            values = " | ".join(f"{r['structure_details'][k]:.3f}" for k, _ in columns)
            lines.append(f"| `{name}` | {values} |")
        lines.append("")
    return lines[:-1]


def describe_rf(rf: dict) -> str:
    """``size 16, span 31, 15 holes`` in 1D; ``size 44, span 44, no blind spot`` in 2D."""
    text = f"size {rf['size']}, span {rf['span']}"
    if rf["holes"] is not None:
        text += f", {rf['holes']} holes"
    if rf["blind_spot"] is not None:
        spot = rf["blind_spot"]
        text += f", blind spot {spot} px" if spot else ", no blind spot"
    return text
