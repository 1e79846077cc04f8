"""Loss equivalence: the lecture's whole argument for causal models, checked.

For every position ``u``, the prediction at ``u`` computed from the input whose positions of rank
``>= u`` are replaced by the lecture's zeros (``> u`` for a ``next`` model, which may see ``u``)
must equal the prediction at ``u`` from the one-pass forward. Where the subject has class targets
(tokens, or class-valued inputs), the per-position cross-entropies are compared too, and their sum
against the one-pass loss::

    l(f, x) = sum_u l(f_u(x_1, .., x_{u-1}, 0, .., 0), x_u) = sum_u l(f_u(x_1, .., x_T), x_u)
"""

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from .causality import SAFETY, chunk_copies, measure_noise_floor
from .chunks import chunked
from .running import forward
from .subject import Subject


@dataclass
class LossEquivalence:
    max_abs_diff: float  # largest |prediction difference| over the covered positions
    max_loss_diff: float | None  # largest |cross-entropy difference| (None: no class targets)
    one_pass_loss: float | None  # sum of per-position losses from one forward pass
    masked_loss: float | None  # sum of per-position losses from the masked inputs
    positions: list[dict] = field(default_factory=list)  # per covered position
    tolerance: float = 0.0

    @property
    def holds(self) -> bool:
        return self.max_abs_diff <= self.tolerance

    @classmethod
    def from_rows(cls, rows: list[dict], tolerance: float) -> "LossEquivalence":
        """The summary of per-position rows (sorted by position, so that sums are exact
        repeats whatever order the rows were computed in)."""
        rows = sorted(rows, key=lambda r: r["position"])
        diff = max((r["max_abs_diff"] for r in rows), default=0.0)
        if not rows or "loss_diff" not in rows[0]:
            return cls(diff, None, None, None, rows, tolerance)
        return cls(
            max_abs_diff=diff,
            max_loss_diff=max(r["loss_diff"] for r in rows),
            one_pass_loss=sum(r["one_pass_loss"] for r in rows),
            masked_loss=sum(r["masked_loss"] for r in rows),
            positions=rows,
            tolerance=tolerance,
        )


def merge_losses(parts: list[LossEquivalence]) -> LossEquivalence:
    """One check from the checks of shards that covered disjoint positions."""
    rows = [row for part in parts for row in part.positions]
    return LossEquivalence.from_rows(rows, max(part.tolerance for part in parts))


def masked_input(subject: Subject, x: torch.Tensor, cut: int) -> torch.Tensor:
    """``x`` with every position of rank >= ``cut`` set to the lecture's zeros."""
    masked = x.clone()
    masked[:, subject.ranks >= cut] = 0
    return masked


def loss_equivalence(
    subject: Subject,
    x: torch.Tensor,
    *,
    convention: str,
    positions: list[int],
    tolerance: float | None = None,
    seed: int = 0,
    shard: tuple[int, int] | None = None,
) -> LossEquivalence:
    """Compare, at each flat position in ``positions``, the masked and one-pass predictions.

    ``convention``: ``current`` masks ranks ``>= rank(u)``, ``next`` masks ranks ``> rank(u)``.
    ``tolerance``: largest difference taken as rounding (default: ``SAFETY`` times the noise
    floor measured here, with the batch sizes used). ``shard``: this shard's chunks only.
    """
    y_full = forward(subject, x, seed=seed).detach()
    targets = subject.targets(x, convention)
    if targets is not None and y_full.shape[-1] != (subject.vocab or subject.classes):
        targets = None  # the outputs are not logits over the input's classes: no cross-entropy
    shift = 1 if convention == "next" else 0
    per_chunk = chunk_copies(x.shape[0], subject)
    if tolerance is None:
        copies = min(per_chunk, len(positions))
        floor, _ = measure_noise_floor(subject, x, y_full, copies, seed=seed)
        tolerance = SAFETY * floor
    rows = []
    for chunk in chunked(positions, per_chunk, shard):
        masked = torch.cat([masked_input(subject, x, int(subject.ranks[u]) + shift) for u in chunk])
        y_masked = forward(subject, masked, seed=seed).detach()
        y_masked = y_masked.reshape(len(chunk), *y_full.shape)
        for u, y in zip(chunk, y_masked, strict=True):
            rows.append(_compare(y_full[:, u], y[:, u], None if targets is None else targets[:, u]))
            rows[-1]["position"] = u
    return LossEquivalence.from_rows(rows, tolerance)


def _compare(full: torch.Tensor, masked: torch.Tensor, target: torch.Tensor | None) -> dict:
    """``full``, ``masked``: (B, K) predictions at one position; ``target``: (B,) or None."""
    row = {"max_abs_diff": float((full.double() - masked.double()).abs().max())}
    if target is not None:
        valid = target >= 0
        if valid.any():
            one = F.cross_entropy(full[valid].double(), target[valid], reduction="sum")
            two = F.cross_entropy(masked[valid].double(), target[valid], reduction="sum")
        else:
            one = two = torch.zeros((), dtype=torch.float64)
        row.update(
            one_pass_loss=float(one) / len(target),
            masked_loss=float(two) / len(target),
            loss_diff=abs(float(one) - float(two)) / len(target),
        )
    return row
