"""Models that run at one batch size only.

The audit calls a model at several batch sizes: a pair of samples to validate it, one sample per
perturbation, many stacked copies per sweep or dependency-map pass. Some third-party models do
not allow that: a PixelCNN++ implementation builds a padding tensor sized by its first input's
batch and caches it, so its next call at another batch size fails ("Sizes of tensors must
match"), or broadcasts the cached tensor and returns the first call's batch size.

The subject notices (a call fails, or returns the wrong batch, at a batch size other than the
first one that worked, and the same samples run at the first batch size) and from then on runs
every forward pass at that batch size: bigger batches in slices, smaller ones padded with copies
of their last sample, whose predictions are dropped. Samples are independent in such a model (the
audit measures that), so the predictions are the ones a batch of any size would give. The report
says so, in the words a user can act on.
"""

import torch

from properties.errors import describe

__all__ = ["BatchMismatch", "NOTE_START", "note", "rows", "slices"]


class BatchMismatch(Exception):
    """The model returned another batch size than it was given."""

    def __init__(self, got: int):
        super().__init__(f"the output has {got} samples, not one per input sample")


def slices(x: torch.Tensor, size: int):
    """``(part, keep)`` pairs: ``x`` cut along the batch axis into parts of exactly ``size``
    samples, the last one padded with copies of its last sample; ``keep`` samples of each part's
    output are real."""
    for start in range(0, x.shape[0], size):
        part = x[start : start + size]
        keep = part.shape[0]
        if keep < size:
            part = torch.cat([part, part[-1:].expand(size - keep, *part.shape[1:])])
        yield part, keep


NOTE_START = "the model ran on batch "


def rows(part: int, size: int, total: int) -> torch.Tensor:
    """The samples of ``x`` in part ``part`` of :func:`slices` (``total`` samples in all)."""
    return torch.arange(part * size, (part + 1) * size).clamp(max=total - 1)


def note(first: int, failed: int, exc: BaseException) -> str:
    """What the report says about a model that runs at one batch size only."""
    squeeze = " or squeeze a batch of 1 away" if failed == 1 else ""
    return (
        f"{NOTE_START}{first} and fails on batch {failed} ({describe(exc)}): does it "
        f"cache state from its first call (a tensor sized by the first batch){squeeze}? Every "
        f"forward pass of this audit then ran at batch {first}: larger batches in slices, "
        "smaller ones padded"
    )
