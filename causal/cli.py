"""``python -m causal``: train a model on a data set, or sample from a model.

::

    python -m causal train --model NAME --data {toy,digits,mnist} [--epochs N | --minutes M]
                           [--seed S] [--mnist-dir DIR] --out DIR
    python -m causal sample (--model NAME | --checkpoint DIR) --n N [--length T | --shape H W]
                            --seed S [--dtype float32|float64] [--no-cache] --out FILE.pt|FILE.png
    python -m causal experiments [--minutes M] [--seeds N] [--samples N] [--jobs J] --out DIR

``sample`` computes one new position per step from per-layer caches (:mod:`causal.incremental`);
``--no-cache`` runs the lecture's loop instead, the whole model on the whole grid for every value.
``experiments`` measures the lecture's claims (:mod:`causal.experiments`).

Bad input (unknown names, missing files, a checkpoint that does not fit, a grid the model cannot
run on) ends with one line on stderr and exit code 2, never a traceback: the user can act on the
line, and a traceback would only hide it.
"""

import argparse
import importlib.util
import sys
from pathlib import Path

import torch

from . import data as data_module
from . import registry
from .experiments import ExperimentConfig, run_experiments
from .incremental import NoCachedStepper
from .sample import DTYPES, GridError, check_grid, sample, save_picture
from .train import CheckpointError, TrainConfig, load_checkpoint, run

USAGE_ERROR = 2


class UsageError(Exception):
    """Bad command-line input; the message is printed as one line."""


class OneLineParser(argparse.ArgumentParser):
    """argparse prints the whole usage before its error; we print only the error line."""

    def error(self, message):
        raise UsageError(f"{self.prog}: {message} (see --help)")


def _positive(cast):
    def parse(text):
        value = cast(text)
        if not value > 0:
            raise argparse.ArgumentTypeError(f"must be positive, got {text}")
        return value

    parse.__name__ = cast.__name__  # argparse names the type in its messages
    return parse


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(prog="python -m causal", description=__doc__.split("\n")[0])
    commands = parser.add_subparsers(dest="command", required=True, parser_class=OneLineParser)

    train = commands.add_parser("train", help="train a registry model on a data set")
    train.add_argument("--model", required=True, help=f"one of {', '.join(registry.REGISTRY)}")
    train.add_argument("--data", required=True, choices=data_module.DATASETS)
    budget = train.add_mutually_exclusive_group()
    budget.add_argument("--epochs", type=_positive(int), help="number of epochs (default 10)")
    budget.add_argument("--minutes", type=_positive(float), help="wall-clock training budget")
    train.add_argument("--seed", type=int, default=0)
    train.add_argument("--lr", type=_positive(float), default=TrainConfig.lr)
    train.add_argument("--batch-size", type=_positive(int), default=TrainConfig.batch_size)
    train.add_argument("--weight-decay", type=float, default=TrainConfig.weight_decay)
    train.add_argument("--mnist-dir", help="folder with the MNIST IDX files (--data mnist)")
    train.add_argument("--out", required=True, help="run directory for checkpoint and metrics")

    samp = commands.add_parser("sample", help="sample sequences or images from a model")
    samp.add_argument("--model", help="untrained registry model, or the checkpoint's model")
    samp.add_argument("--checkpoint", help="a run directory or checkpoint file")
    samp.add_argument("--n", type=_positive(int), required=True, help="number of samples")
    grid = samp.add_mutually_exclusive_group()
    grid.add_argument("--length", type=int, help="sequence length (1D models)")
    grid.add_argument("--shape", type=int, nargs=2, metavar=("H", "W"), help="image size (2D)")
    samp.add_argument("--seed", type=int, required=True)
    samp.add_argument("--dtype", choices=DTYPES, default="float32")
    samp.add_argument(
        "--no-cache",
        action="store_true",
        help="rerun the whole model for every value (the lecture's loop) instead of the cache",
    )
    samp.add_argument("--out", required=True, help="FILE.pt (LongTensor) or FILE.png (picture)")

    defaults = ExperimentConfig()
    exp = commands.add_parser(
        "experiments", help="the lecture's claims measured: NLL, receptive field, structure"
    )
    exp.add_argument(
        "--minutes",
        type=_positive(float),
        default=defaults.minutes,
        help="training budget per model and seed, as steps at a reference rate "
        f"(default {defaults.minutes:g})",
    )
    exp.add_argument(
        "--seeds", type=_positive(int), default=defaults.seeds, help="seeds 0..N-1 (default 3)"
    )
    exp.add_argument(
        "--samples",
        type=_positive(int),
        default=defaults.samples,
        help=f"samples per model and seed for the structure score (default {defaults.samples})",
    )
    exp.add_argument(
        "--jobs",
        type=_positive(int),
        default=defaults.jobs,
        help=f"training runs in parallel, one thread each (default {defaults.jobs})",
    )
    exp.add_argument("--out", required=True, help="directory for results.json, results.md, ...")
    return parser


# ---------------------------------------------------------------------------------------------
# train


def _spec(name):
    try:
        return registry.get(name)
    except KeyError as error:
        raise UsageError(error.args[0]) from None


def cmd_train(args) -> int:
    spec = _spec(args.model)
    if Path(args.out).exists() and not Path(args.out).is_dir():
        raise UsageError(f"--out {args.out} is a file; train writes a run directory there")
    dataset = data_module.load(args.data, mnist_dir=args.mnist_dir)
    if spec.dims != dataset.dims:
        raise UsageError(
            f"model {spec.name} is {spec.dims}-D, data {dataset.name} is {dataset.dims}-D "
            f"{dataset.grid}; pick a {dataset.dims}-D model"
        )
    config = TrainConfig(
        model=spec.name,
        data=dataset.name,
        epochs=args.epochs,
        minutes=args.minutes,
        seed=args.seed,
        lr=args.lr,
        batch_size=args.batch_size,
        weight_decay=args.weight_decay,
    )
    metrics = run(config, dataset, args.out)
    _save_run_samples(Path(args.out), dataset, args.seed)
    print(
        f"{spec.name} on {dataset.name}: test NLL {metrics['test_nll_nats']:.2f} nats "
        f"({metrics['test_bits_per_dim']:.3f} bits/dim), {metrics['epochs']} epochs in "
        f"{metrics['seconds']:.0f} s; wrote {args.out}"
    )
    return 0


def _save_run_samples(out: Path, dataset, seed: int) -> None:
    """16 samples of the trained model next to 16 training items, for a look by eye."""
    model, config = load_checkpoint(out)
    # cached steps (one new position per step); "auto" falls back to the full recompute for a
    # model without a stepper rather than failing after the training is done
    samples = sample(model, 16, config["grid"], seed=seed, cache="auto")
    save_picture(samples, out / "samples.png", dataset.nb_classes, title="samples")
    save_picture(dataset.train[:16], out / "train.png", dataset.nb_classes, title="training data")


# ---------------------------------------------------------------------------------------------
# sample


def _sample_source(args):
    """``(model, grid it was built for, nb_classes)`` from --checkpoint or --model."""
    if args.checkpoint is not None:
        if args.model is not None:
            _spec(args.model)  # an unknown name is reported as such, not as a mismatch
        model, config = load_checkpoint(args.checkpoint, expected_model=args.model)
        return model, tuple(config["grid"]), config["nb_classes"]
    spec = _spec(args.model)
    with torch.random.fork_rng(devices=[]):  # seeded init, caller's RNG untouched
        torch.manual_seed(args.seed)
        model = spec.make()
    return model.eval(), spec.grid, spec.nb_classes


def _requested_grid(args, default):
    if args.length is not None:
        return (args.length,)
    if args.shape is not None:
        return tuple(args.shape)
    return default


def cmd_sample(args) -> int:
    if args.model is None and args.checkpoint is None:
        raise UsageError("sample needs --model NAME or --checkpoint DIR")
    out = Path(args.out)
    if out.suffix not in (".pt", ".png"):
        raise UsageError(f"--out must end with .pt or .png, got {args.out}")
    model, built_grid, nb_classes = _sample_source(args)
    grid = _requested_grid(args, built_grid)
    check_grid(model, grid, dims=len(built_grid))
    try:
        samples = sample(
            model, args.n, grid, seed=args.seed, dtype=DTYPES[args.dtype], cache=not args.no_cache
        )
    except NoCachedStepper:  # a registry model added without its stepper
        raise UsageError(f"{type(model).__name__} has no cached stepper: pass --no-cache") from None
    out.parent.mkdir(parents=True, exist_ok=True)
    if out.suffix == ".pt":
        torch.save(samples, out)
    else:
        save_picture(samples, out, nb_classes)
    print(f"wrote {args.n} samples of grid {grid} to {out}")
    return 0


# ---------------------------------------------------------------------------------------------
# experiments


def cmd_experiments(args) -> int:
    if Path(args.out).exists() and not Path(args.out).is_dir():
        raise UsageError(f"--out {args.out} is a file; experiments writes a directory there")
    missing = [name for name in ("matplotlib", "sklearn") if importlib.util.find_spec(name) is None]
    if missing:  # checked first: finding out after 15 minutes of training would hurt
        raise UsageError(
            f"experiments needs {' and '.join(missing)}: "
            "pip install 'autoregressive-audit[data,plots]'"
        )
    config = ExperimentConfig(
        minutes=args.minutes, seeds=args.seeds, samples=args.samples, jobs=args.jobs
    )
    run_experiments(config, args.out)
    return 0


# ---------------------------------------------------------------------------------------------


def main(argv=None) -> int:
    """Runs the CLI; returns the exit code (2 with a one-line message on bad input)."""
    try:
        args = build_parser().parse_args(argv)
        commands = {"train": cmd_train, "sample": cmd_sample, "experiments": cmd_experiments}
        return commands[args.command](args)
    except (UsageError, data_module.DataError, CheckpointError, GridError) as error:
        message = " ".join(str(error).split())  # one line, whatever the source
        print(f"error: {message}", file=sys.stderr)
        return USAGE_ERROR
