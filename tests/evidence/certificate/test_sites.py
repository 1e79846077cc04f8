"""Blame from the certificate: the source line where a leak enters, read back from the file.

For every planted bug class of the random architectures (drawn by Hypothesis) and for leaks as
they are written in the wild (tests/targets/wild_leaks.py, each leaking line marked ``# LEAK``),
the blamed file and line hold the code that brings the leak, and the blamed module is the
leaking layer (checked on the built model: its padding, its mask). Then the rules that pick the
op: a padding or a statistic over time (no position axis) is blamed for what the next op shows;
attention scores (two position axes) are not; a missing shift is blamed on the first layer the
unshifted input reaches, not on a move or a normalization by constants, nor on the harness's own
ops; and the blame run happens only when the bound sees what it must not."""

import linecache

import pytest
import torch
import torch.nn.functional as F
import wild_leaks
from hypothesis import given, settings
from torch import nn

from properties import make_subject, strategies
from properties.evidence.certificate import certify, sites

T = 8


def line(b) -> str:
    return linecache.getline(b.file, b.line)


def chain_code(b) -> list[str]:
    return [linecache.getline(f.file, f.line) for f in b.chain]


def expected(arch):
    """(kind, module, a snippet of the blamed line or of a frame that called it, and a check
    of the blamed module itself) for each planted bug class."""
    last = f"layers.{len(arch.kernel_sizes) - 1}"
    # a 'same' padding whose extra reach the shift takes back sees the present only
    kind = "future" if arch.expected_train_mode == "none" else "present"
    if arch.bug == "batchnorm_over_time":
        return kind, "norm", "self.norm(x)", lambda m: "BatchNorm" in type(m).__name__
    if arch.dims == 1:
        return {
            "same_padding": (kind, last, "layer(x)", lambda m: m.padding == "same"),
            "no_shift": (kind, "input", "x = self.input(x)", lambda m: m.kernel_size == (1,)),
        }[arch.bug]
    if arch.bug == "same_padding":
        stack = "v" if arch.style == "two_stack" else "x"
        return kind, "leak", f"self.leak({stack})", lambda m: m.padding == "same"
    if arch.style == "two_stack":  # no_shift: the horizontal stack reads the current pixel
        return kind, "horizontal.0", "conv_h(h)", lambda m: True
    if arch.bug == "no_shift":
        return kind, "layers.0", "self.mask", lambda m: m.mask_type == "B"

    def open_below(m):
        c = m.mask.shape[0] // 2
        return bool(m.mask[c + 1, c] == 1)

    return kind, last, "self.mask", open_below


@settings(max_examples=20)
@given(strategies.planted_bugs(max_depth=3))
def test_each_planted_bug_class_is_blamed_on_the_line_and_layer_that_leak(arch):
    model = arch.build()
    subject = make_subject(model, grid=arch.grid, layout=arch.layout, predicts="current")
    cert = certify(subject, train=arch.bug == "batchnorm_over_time")
    kind, module, snippet, is_leaky = expected(arch)
    b = cert.blames[kind]
    assert (b.kind, b.source, b.module) == (kind, "certificate", module), b
    assert line(b).strip() == b.code
    assert any(snippet in code for code in chain_code(b)), (snippet, chain_code(b))
    assert is_leaky(model.get_submodule(module))
    assert b.file.endswith(("properties/extra/architectures.py", "causal/layers.py"))
    assert b.chain[-1].file.endswith("properties/extra/architectures.py")  # the net's forward


@pytest.mark.parametrize("name", sorted(wild_leaks.LEAKS))
def test_wild_leaks_are_blamed_on_the_line_that_brings_them(name):
    factory, options = wild_leaks.LEAKS[name]
    cert = certify(make_subject(factory(), predicts="next", **options))
    assert cert.mode == "none"
    b = cert.blames["future"]
    assert b.file == wild_leaks.__file__
    assert "# LEAK" in line(b), line(b)
    assert set(cert.blames) == {"future"}  # a next-value model may see the present


class Lambda(nn.Module):
    def __init__(self, fn):
        super().__init__()
        self.fn = fn
        self.conv = nn.Conv1d(1, 1, 2)

    def forward(self, x):  # (B, 1, T) -> (B, 1, T)
        return self.fn(self, x)


def blame_of(fn, predicts="current", kind=None):
    cert = certify(make_subject(Lambda(fn), grid=(T,), layout="BCT", predicts=predicts))
    return cert.blames.get(kind or next(iter(cert.blames), "future"))


def causal_conv(s, x):
    return s.conv(F.pad(x, (1, 0)))


def test_a_missing_shift_is_blamed_on_the_first_layer_not_on_moves_or_scalings():
    def fn(s, x):
        x = x.transpose(1, 2).transpose(1, 2)  # moves: seeing the present is theirs by nature
        x = (x - 0.5) / 2.0  # a normalization by constants
        return causal_conv(s, x)  # the first layer the unshifted input reaches

    b = blame_of(fn)
    assert b.kind == "present" and "return s.conv(F.pad(x, (1, 0)))" in line(b)
    assert "return causal_conv(s, x)" in chain_code(b)[1]  # the caller, next in the chain
    assert b.op == "aten.convolution.default"


def test_a_residual_that_carries_the_present_is_blamed_on_its_sum():
    def fn(s, x):
        h = causal_conv(s, F.pad(x, (1, -1)))  # shifted: strict
        return h + x  # the residual brings x_t back

    b = blame_of(fn)
    assert b.kind == "present" and "return h + x" in line(b)


def test_a_padding_on_the_wrong_side_is_blamed_on_the_padding():
    def fn(s, x):
        padded = F.pad(x, (0, 1))  # the padding goes right: the conv then reads x_{t+1}
        return s.conv(padded)

    b = blame_of(fn, predicts="next")
    assert "padded = F.pad(x, (0, 1))" in line(b)
    assert b.op == "aten.constant_pad_nd.default"


def test_attention_scores_are_not_blamed_for_the_mask_that_follows():
    def fn(s, x):
        h = F.pad(x, (1, -1)).transpose(1, 2)  # (B, T, 1), shifted
        scores = h @ h.transpose(1, 2)  # every key: the mask decides
        scores = scores.masked_fill(torch.ones(T, T, dtype=torch.bool).tril(-1), -1e30)
        weights = torch.softmax(scores, -1)  # the flipped mask keeps the future keys
        return (weights @ h).transpose(1, 2)

    b = blame_of(fn, predicts="next")
    assert "scores = h @ h.transpose(1, 2)" not in line(b)
    # the softmax's weights are alike along the keys: read on the queries, they see the future
    assert "weights = torch.softmax(scores, -1)" in line(b)


def test_a_model_of_torch_layers_only_is_blamed_on_its_module():
    model = nn.Sequential(nn.Conv1d(1, 2, 3, padding="same"), nn.Tanh())
    cert = certify(make_subject(model, grid=(T,), layout="BCT", predicts="next"))
    b = cert.blames["future"]
    assert (b.file, b.module, b.module_type, b.chain) == (None, "0", "Conv1d", [])


def test_the_blame_run_is_made_only_when_the_bound_sees_what_it_must_not(monkeypatch):
    made = []
    original = sites.SiteTracer.__init__

    def counting(self, *args, **kwargs):
        made.append(kwargs["present"])
        original(self, *args, **kwargs)

    monkeypatch.setattr(sites.SiteTracer, "__init__", counting)
    certify(make_subject(Lambda(causal_conv), grid=(T,), layout="BCT", predicts="next"))
    assert made == []  # inclusive and allowed: no second run
    certify(make_subject(Lambda(causal_conv), grid=(T,), layout="BCT", predicts="current"))
    assert made == [True]  # the present is forbidden: one run, which looks for it
    made.clear()
    shifted = Lambda(lambda s, x: causal_conv(s, F.pad(x, (1, -1))))
    certify(make_subject(shifted, grid=(T,), layout="BCT", predicts="current"), train=True)
    assert made == []  # proved in both modes: no blame run at all
