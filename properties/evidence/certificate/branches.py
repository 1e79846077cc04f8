"""Branches on input values that do not change the computation.

A value read into Python can steer the model anywhere, so the certificate cannot follow it: every
output may then depend on everything. Two kinds of reads have only two outcomes, and then the
other outcome can simply be run:

- a boolean (``bool(t)``, ``t.item()`` of a bool tensor, ``x in t``, ``torch.equal``): run the
  model again with the read answering the other way;
- a check that raises on values (``_assert_async``, the error check of ``cholesky``,
  ``F.one_hot``'s range check): run it again with the check raising.

If every combination of outcomes either ends in an exception (no output, so nothing to see) or
runs *the same computation* (the same ops, on the same tensors, with the same non-tensor
arguments and the same data made from Python), the reads reach no output: the model's output
is one function of the input whatever they said. Hugging Face's
``warn_if_padding_and_no_attention_mask`` reads ``input_ids[:, [-1, 0]]`` only to decide
whether to log a warning: both outcomes run the same ops. At most ``MAX_BRANCHES`` reads are
enumerated (2^k runs); beyond, or when a combination computes something else, the reads are
out of the tracer's sight.
"""

import contextlib
import itertools
import logging
import warnings

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten
from torch.utils.weak import WeakTensorKeyDictionary

MAX_BRANCHES = 3
aten = torch.ops.aten


class ForcedRaise(RuntimeError):
    """A check made to fail by the certificate, to see what the model does then."""


class Recorder(TorchDispatchMode):
    """Runs a model, answering the reads at ``forced`` (read number -> "flip" or "raise") the
    other way, and records the computation from read number ``start`` on."""

    supports_higher_order_operators = True

    def __init__(self, reads, forced: dict, start: int, preexisting):
        super().__init__()
        self.reads, self.forced, self.start = reads, forced, start
        self.count = 0
        self.made = 0  # tensors made so far: each gets the next number, never reused
        self.created = WeakTensorKeyDictionary()
        self.known = {id(t): i for i, t in enumerate(preexisting)}
        self.keep = list(preexisting)  # their ids must stay theirs during the run
        self.signature: list = []

    def ident(self, t):
        if t in self.created:
            return ("made", self.created[t])
        if id(t) in self.known:
            return ("model", self.known[id(t)])
        if t.numel() <= 4096 and t.device.type == "cpu" and t.layout == torch.strided:
            return ("data", str(t.dtype), tuple(t.shape), tuple(t.reshape(-1).tolist()))
        return ("other", tuple(t.shape), str(t.dtype))

    def _sig(self, value):
        if isinstance(value, torch.Tensor):
            return self.ident(value)
        if isinstance(value, float):
            return value.hex()
        if isinstance(value, (int, bool, str, type(None), torch.dtype, torch.device,
                              torch.layout, torch.memory_format)):
            return repr(value)
        return type(value).__name__

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        number = None
        if func in self.reads:
            number = self.count
            self.count += 1
        recording = self.count > self.start or number == self.start
        if recording:
            leaves, spec = tree_flatten((args, kwargs))
            self.signature.append((str(func), str(spec), tuple(self._sig(v) for v in leaves)))
        how = self.forced.get(number)
        if how == "raise":
            raise ForcedRaise(f"{func} made to fail by the certificate")
        out = func(*args, **kwargs)
        if how == "flip":
            out = not out
        for o in tree_flatten(out)[0]:
            if isinstance(o, torch.Tensor) and o not in self.created:
                self.created[o] = self.made
                self.made += 1
        if recording and number is None:  # (a read's own answer is what differs)
            self.signature.append(("->", tuple(self._sig(o) for o in tree_flatten(out)[0])))
        return out


def same_computation(run, reads, branches, preexisting) -> bool:
    """Whether every combination of the other outcomes of ``branches`` ((read number, "flip" or
    "raise") in order) ends in an exception or computes what the natural run computes.
    ``run(mode)`` runs the model once under ``mode`` and returns its output."""
    if not branches or len(branches) > MAX_BRANCHES:
        return False
    start = branches[0][0]
    try:
        natural = _record(run, reads, {}, start, preexisting)
    except Exception:  # the model does not run the same way twice: no argument to make
        return False
    for choice in itertools.product((False, True), repeat=len(branches)):
        if not any(choice):
            continue
        forced = {number: how for (number, how), other in zip(branches, choice, strict=True)
                  if other}
        try:
            signature = _record(run, reads, forced, start, preexisting)
        except Exception:  # this outcome ends the run: no output to depend on anything
            continue
        if signature != natural:
            return False
    return True


def _record(run, reads, forced, start, preexisting):
    mode = Recorder(reads, forced, start, preexisting)
    rng = torch.get_rng_state()
    try:
        with _quiet():
            y = run(mode)
    finally:
        torch.set_rng_state(rng)
    return mode.signature + [("out", mode.ident(y))]


@contextlib.contextmanager
def _quiet():
    """The other outcomes' warnings are not the user's (a model may warn in one branch)."""
    previous = logging.root.manager.disable
    logging.disable(logging.CRITICAL)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        logging.disable(previous)
