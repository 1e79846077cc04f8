"""Running a subject the way it really runs, without leaving a trace on it.

- Inference: ``eval()`` and no autograd, where attention fast paths live.
- Training: ``train()`` with the RNG reset to the same seed before every forward pass, so that two
  passes that differ only in their input see the same dropout masks (dropout must not look like a
  leak; BatchNorm statistics over time must). Buffers (BatchNorm running statistics) are restored
  afterwards: an audit must not change the model it audits.
"""

import copy
from contextlib import contextmanager

import torch

from properties.errors import AdapterError, describe
from properties.subject.canonical import Subject

__all__ = [
    "check_input_untouched",
    "check_outputs_finite",
    "float64_copy",
    "forward",
    "model_mode",
    "seeded",
]


@contextmanager
def model_mode(subject: Subject, train: bool):
    """Set train/eval for the duration; restore every module's flag and every buffer after."""
    module = subject.module
    if module is None:
        yield
        return
    flags = [(m, m.training) for m in module.modules()]
    saved = [b.detach().clone() for b in module.buffers()] if train else []
    module.train(train)
    try:
        yield
    finally:
        for m, flag in flags:
            m.training = flag
        if saved:
            with torch.no_grad():
                for buffer, value in zip(module.buffers(), saved, strict=True):
                    buffer.copy_(value)


@contextmanager
def seeded(subject: Subject, seed: int):
    """The global RNG set to ``seed`` for the duration, and restored after.

    Cheaper than ``torch.random.fork_rng`` + ``torch.manual_seed``, which with a CPU-only torch
    formats the Python stack for lazy device seeding (5 ms a call inside pytest): this runs on
    every forward pass of an audit.
    """
    cpu_state = torch.random.get_rng_state()
    device = subject.device
    cuda_state = torch.cuda.get_rng_state(device) if device.type == "cuda" else None
    torch.random.default_generator.manual_seed(seed)
    if cuda_state is not None:
        torch.cuda.manual_seed(seed)
    try:
        yield
    finally:
        torch.random.set_rng_state(cpu_state)
        if cuda_state is not None:
            torch.cuda.set_rng_state(cuda_state, device)


def forward(subject: Subject, x: torch.Tensor, *, seed: int, grad: bool = False) -> torch.Tensor:
    """One forward pass with the global RNG reset to ``seed`` (dropout masks repeat)."""
    with seeded(subject, seed), torch.set_grad_enabled(grad):
        return subject(x)


def float64_copy(subject: Subject) -> tuple[Subject, str | None]:
    """A float64 copy of the subject, so that a zero gradient is a zero.

    Returns the subject unchanged, with a note, when the model cannot be copied or converted
    (not a module, custom dtypes...): the evidence is then gathered in the model's own dtype.
    """
    module = subject.module
    if module is None:
        return subject, "the model is not an nn.Module: gradients taken in its own dtype"
    if subject.dtype == torch.float64:
        return subject, None
    try:
        double = copy.deepcopy(module).double()
    except Exception as exc:  # deepcopy of exotic modules can fail; float32 still works
        return subject, f"could not make a float64 copy ({describe(exc)}): gradients in float32"
    return subject.with_model(double), None


def check_input_untouched(subject: Subject, x: torch.Tensor, seed: int) -> str | None:
    """Run once and report whether the model changed its input in place.

    Every check passes a fresh copy to the model, so such a model is still audited correctly;
    the note tells the user their model mutates what it is given.
    """
    native = subject.native_input(x.to(subject.device))
    if not subject.tokens:
        native = native.to(subject.dtype)
    before = native.clone()
    with seeded(subject, seed), torch.no_grad():
        subject.call_native(native)
    if not torch.equal(before, native):
        return "the model changes its input in place (the audit passes it a fresh copy each time)"
    return None


def check_outputs_finite(y: torch.Tensor, what: str = "outputs") -> None:
    bad = ~torch.isfinite(y)
    if bad.any():
        b, n, k = (int(i) for i in bad.nonzero()[0])
        kind = "NaN" if torch.isnan(y[b, n, k]) else "Inf"
        positions = bad.any(dim=(0, 2)).nonzero().flatten().tolist()
        where = ", ".join(str(p) for p in positions[:5]) + (", ..." if len(positions) > 5 else "")
        hint = ""
        if kind == "NaN" and len(positions) <= y.shape[1] // 2:
            # NaN at a few positions only: a softmax over a row whose every key is masked
            hint = "; NaN at a few positions is the mark of an attention row with every key "
            hint += "masked (a mask with the wrong polarity?)"
        raise AdapterError(
            f"the model's {what} contain {kind} ({int(bad.sum())} values, at flat positions "
            f"{where}) on ordinary random inputs{hint}",
            "fix the model (or its initialisation) first: a NaN hides every dependency",
        )
