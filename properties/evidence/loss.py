"""Loss equivalence: the lecture's whole argument for causal models, checked.

For every position ``u``, the prediction at ``u`` computed from the input whose positions of rank
``>= u`` are replaced by the lecture's zeros (``> u`` for a ``next`` model, which may see ``u``)
must equal the prediction at ``u`` from the one-pass forward. The masked inputs are exactly the
perturbation sweep's (:func:`properties.evidence.perturbation.sweep`), so the rows are read off its
forward passes (:class:`LossRows`) instead of costing passes of their own. Where the subject has
class targets (tokens, or class-valued inputs), the per-position cross-entropies are compared too,
and their sum against the one-pass loss::

    l(f, x) = sum_u l(f_u(x_1, .., x_{u-1}, 0, .., 0), x_u) = sum_u l(f_u(x_1, .., x_T), x_u)
"""

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from properties.subject.canonical import Subject

__all__ = ["LossEquivalence", "LossRows", "merge_losses"]


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


class LossRows:
    """The sweep's observer: per-position rows of the loss check, for both conventions.

    At cut ``c`` the sweep replaced ranks ``>= c`` by the lecture's zeros. That masked input is
    the ``current`` model's input for the position of rank ``c`` and the ``next`` model's input
    for the position of rank ``c - 1``: one forward pass, two rows.
    """

    def __init__(self, subject: Subject, x: torch.Tensor, y_full: torch.Tensor, tolerance: float):
        self.subject, self.y_full, self.tolerance = subject, y_full, tolerance
        self.by_rank = torch.argsort(subject.ranks)  # by_rank[r]: the position of rank r
        self.targets = {c: _targets(subject, x, y_full, c) for c in ("current", "next")}
        self.rows: dict[str, list[dict]] = {"current": [], "next": []}

    def __call__(self, cut: int, y_masked: torch.Tensor) -> None:
        for convention, rank in (("current", cut), ("next", cut - 1)):
            if rank >= 0:
                self._row(convention, int(self.by_rank[rank]), y_masked)
        if cut == self.subject.n_positions - 1:  # next: the last position masks nothing
            self._row("next", int(self.by_rank[cut]), self.y_full)

    def _row(self, convention: str, u: int, y_masked: torch.Tensor) -> None:
        targets = self.targets[convention]
        target = None if targets is None else targets[:, u]
        row = _compare(self.y_full[:, u], y_masked[:, u], target)
        row["position"] = u
        self.rows[convention].append(row)

    def results(self) -> dict[str, LossEquivalence]:
        return {c: LossEquivalence.from_rows(rows, self.tolerance) for c, rows in self.rows.items()}


def _targets(subject: Subject, x: torch.Tensor, y: torch.Tensor, convention: str):
    targets = subject.targets(x, convention)
    if targets is not None and y.shape[-1] != (subject.vocab or subject.classes):
        return None  # the outputs are not logits over the input's classes: no cross-entropy
    return targets


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
