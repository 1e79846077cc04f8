"""One-pass training of a causal model (lecture slide 16), evaluation in nats, checkpoints.

Because the model is causal, one forward pass on the *full* sequence gives the prediction of every
position from its past only, and the loss of the whole sequence is the cross-entropy of those
logits against the sequence itself: no masking, no loop over positions.

The inputs are normalized by the model (its :class:`~causal.layers.Normalize` buffers hold the
training split's mean and std, set here), so a checkpoint carries everything sampling needs.

Checkpoints are plain ``{"config": dict, "state_dict": ...}`` saved by ``torch.save`` and read
back with ``weights_only=True``: no pickled code, so loading a checkpoint cannot run anything.
"""

import copy
import json
import math
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from . import registry
from .data import Dataset, to_model_input
from .layers import Normalize

CHECKPOINT_NAME = "checkpoint.pt"
METRICS_NAME = "metrics.json"


class CheckpointError(ValueError):
    """A checkpoint cannot be read or does not fit the model it names; one-line message."""


@dataclass
class TrainConfig:
    model: str
    data: str = "toy"
    epochs: int | None = None  # stop after this many epochs ...
    minutes: float | None = None  # ... or after this much wall-clock time (the first reached)
    seed: int = 0  # initialization and batch order; the data split has its own fixed seed
    batch_size: int = 32
    lr: float = 2e-3  # Adam's peak learning rate
    warmup: float = 0.02  # fraction of the run with a linear ramp up to ``lr``
    eval_batch_size: int = 500

    def __post_init__(self):
        if self.epochs is None and self.minutes is None:
            self.epochs = 10


# ---------------------------------------------------------------------------------------------
# Model and loss


def build_model(name: str, nb_classes: int, grid) -> nn.Module:
    """A fresh registry model for ``nb_classes`` levels on ``grid`` (a ``KeyError`` if unknown)."""
    return registry.get(name).make(nb_classes=nb_classes, grid=tuple(grid))


def set_normalization(model: nn.Module, mean: float, std: float) -> None:
    """Writes the training split's statistics into every ``Normalize`` module of the model."""
    for module in model.modules():
        if isinstance(module, Normalize):
            module.mean.fill_(mean)
            module.std.fill_(std)


def sequence_loss(model: nn.Module, batch: torch.Tensor, reduction="mean") -> torch.Tensor:
    """Cross-entropy of the one-pass logits against the batch itself (slide 16).

    ``batch`` is ``(B, *grid)`` long; the model returns ``(B, *grid, K)`` logits where position
    ``t`` predicts ``x_t`` from ``x_{<t}``.
    """
    dtype = next(model.parameters()).dtype
    logits = model(to_model_input(batch, dtype))  # (B, *grid, K)
    return F.cross_entropy(
        logits.reshape(-1, logits.size(-1)), batch.reshape(-1), reduction=reduction
    )


@torch.no_grad()
def nll_nats(model: nn.Module, x: torch.Tensor, batch_size: int = 500) -> float:
    """Mean negative log-likelihood of the sequences/images ``x`` in nats per sequence/image."""
    was_training = model.training
    model.eval()
    total = sum(sequence_loss(model, b, reduction="sum").item() for b in x.split(batch_size))
    model.train(was_training)
    return total / x.size(0)


def bits_per_dim(nats: float, grid) -> float:
    """Nats per sequence/image -> bits per position."""
    return nats / (math.prod(grid) * math.log(2))


# ---------------------------------------------------------------------------------------------
# The loop


class Clock:
    """Progress of a run in [0, 1], by epochs or by wall-clock time, whichever is further."""

    def __init__(self, epochs, minutes, steps_per_epoch):
        self.start = time.perf_counter()
        self.total_steps = epochs * steps_per_epoch if epochs else None
        self.budget = minutes * 60 if minutes else None

    def seconds(self) -> float:
        return time.perf_counter() - self.start

    def progress(self, step: int) -> float:
        done = [step / self.total_steps] if self.total_steps else []
        done += [self.seconds() / self.budget] if self.budget else []
        return min(1.0, max(done))


def learning_rate(progress: float, peak: float, warmup: float) -> float:
    """Linear warm-up then cosine decay to zero: large steps early, fine ones at the end, and a
    schedule that ends on time whether the run is bounded by epochs or by minutes."""
    if progress < warmup:
        return peak * (progress + 1e-3) / warmup
    return peak * 0.5 * (1 + math.cos(math.pi * (progress - warmup) / (1 - warmup)))


def _progress_bar(total, epoch, enabled):
    from tqdm import tqdm

    # disable=None: the bar shows on a terminal and stays silent in logs and tests.
    return tqdm(
        total=total,
        desc=f"epoch {epoch}",
        file=sys.stderr,
        leave=False,
        disable=None if enabled else True,
    )


@dataclass
class TrainResult:
    model: nn.Module  # with the best-on-validation weights loaded
    best_epoch: int
    best_val_nll: float
    epochs: int  # epochs started (the last one may be cut by the time budget)
    steps: int
    seconds: float
    history: list  # one dict per epoch: epoch, train_loss (nats/position), val_nll_nats


def train(model: nn.Module, data: Dataset, config: TrainConfig, progress=True) -> TrainResult:
    """Adam on shuffled minibatches until ``config.epochs`` or ``config.minutes`` runs out;
    keeps the weights of the epoch with the lowest validation NLL."""
    set_normalization(model, data.mean, data.std)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr)
    generator = torch.Generator().manual_seed(config.seed)
    steps_per_epoch = math.ceil(data.train.size(0) / config.batch_size)
    clock = Clock(config.epochs, config.minutes, steps_per_epoch)
    best = (math.inf, 0, copy.deepcopy(model.state_dict()))
    history, step, epoch = [], 0, 0
    while clock.progress(step) < 1:
        epoch += 1
        model.train()
        order = torch.randperm(data.train.size(0), generator=generator)
        bar, losses = _progress_bar(steps_per_epoch, epoch, progress), []
        for batch in data.train[order].split(config.batch_size):
            for group in optimizer.param_groups:
                group["lr"] = learning_rate(clock.progress(step), config.lr, config.warmup)
            loss = sequence_loss(model, batch)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            step += 1
            losses.append(loss.item())
            bar.update()
            bar.set_postfix(loss=f"{loss.item():.3f}")
            if clock.progress(step) >= 1:
                break
        bar.close()
        val = nll_nats(model, data.val, config.eval_batch_size)
        history.append(
            {"epoch": epoch, "train_loss": sum(losses) / len(losses), "val_nll_nats": val}
        )
        if val < best[0]:
            best = (val, epoch, copy.deepcopy(model.state_dict()))
    model.load_state_dict(best[2])
    model.eval()
    return TrainResult(model, best[1], best[0], epoch, step, clock.seconds(), history)


# ---------------------------------------------------------------------------------------------
# Checkpoints and metrics


def checkpoint_config(name: str, data: Dataset) -> dict:
    """Everything needed to rebuild the model, as plain values (``weights_only`` loads them)."""
    return {
        "model": name,
        "nb_classes": data.nb_classes,
        "grid": list(data.grid),
        "data": data.name,
    }


def save_checkpoint(path, model: nn.Module, config: dict) -> None:
    torch.save({"config": dict(config), "state_dict": model.state_dict()}, path)


def checkpoint_path(path) -> Path:
    """A checkpoint file, or the ``checkpoint.pt`` inside a run directory."""
    path = Path(path)
    return path / CHECKPOINT_NAME if path.is_dir() else path


def read_checkpoint(path) -> dict:
    """The raw ``{"config", "state_dict"}`` dict, read with ``weights_only=True``."""
    path = checkpoint_path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch raises many kinds for a file that is not a checkpoint
        first_line = str(error).strip().splitlines()[0] if str(error).strip() else type(error)
        raise CheckpointError(f"{path} is not a readable checkpoint: {first_line}") from error
    if not isinstance(checkpoint, dict) or not {"config", "state_dict"} <= checkpoint.keys():
        raise CheckpointError(f"{path} is not a causal checkpoint (no config and state_dict)")
    return checkpoint


def load_checkpoint(path, expected_model: str | None = None) -> tuple[nn.Module, dict]:
    """Rebuilds the model a checkpoint names and loads its weights; returns ``(model, config)``.

    Raises :class:`CheckpointError` if the checkpoint names another model than
    ``expected_model``, names an unknown model, or holds weights that do not fit its config.
    """
    checkpoint = read_checkpoint(path)
    config = checkpoint["config"]
    name = config.get("model")
    if expected_model is not None and name != expected_model:
        raise CheckpointError(
            f"checkpoint {checkpoint_path(path)} is a {name!r} model, not {expected_model!r}"
        )
    try:
        model = build_model(name, config["nb_classes"], config["grid"])
    except KeyError as error:
        raise CheckpointError(f"checkpoint {checkpoint_path(path)}: {error.args[0]}") from error
    try:
        model.load_state_dict(checkpoint["state_dict"])
    except RuntimeError as error:
        raise CheckpointError(
            f"checkpoint {checkpoint_path(path)} does not fit a {name!r} model with "
            f"nb_classes={config['nb_classes']} on grid {tuple(config['grid'])}: "
            + " ".join(str(error).split())[:300]
        ) from error
    return model.eval(), config


def evaluate(model: nn.Module, data: Dataset, batch_size=500) -> dict:
    """Train/val/test NLL in nats per sequence/image and in bits per dimension."""
    metrics = {}
    for split in ("train", "val", "test"):
        nats = nll_nats(model, getattr(data, split), batch_size)
        metrics[f"{split}_nll_nats"] = nats
        metrics[f"{split}_bits_per_dim"] = bits_per_dim(nats, data.grid)
    return metrics


def run(config: TrainConfig, data: Dataset, out_dir, progress=True) -> dict:
    """Builds, trains, evaluates and saves: ``out_dir/checkpoint.pt`` and ``out_dir/metrics.json``.

    Returns the metrics. The model is initialised under ``config.seed`` without touching the
    caller's global RNG.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        model = build_model(config.model, data.nb_classes, data.grid)
    result = train(model, data, config, progress=progress)
    save_checkpoint(out_dir / CHECKPOINT_NAME, result.model, checkpoint_config(config.model, data))
    metrics = {
        "model": config.model,
        "data": data.name,
        "seed": config.seed,
        **evaluate(result.model, data, config.eval_batch_size),
        "uniform_nll_nats": math.prod(data.grid) * math.log(data.nb_classes),
        "epochs": result.epochs,
        "best_epoch": result.best_epoch,
        "steps": result.steps,
        "seconds": result.seconds,
        "nb_parameters": sum(p.numel() for p in result.model.parameters()),
        "nb_classes": data.nb_classes,
        "grid": list(data.grid),
        "config": asdict(config),
        "history": result.history,
    }
    (out_dir / METRICS_NAME).write_text(json.dumps(metrics, indent=2) + "\n")
    return metrics
