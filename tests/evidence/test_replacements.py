"""What each kind of perturbation puts in place of the future (properties/evidence/replacements.py),
kind by kind, and how it is described."""

import pytest
import torch
from known_models import taps_subject
from torch import nn

from properties import make_subject
from properties.evidence.replacements import (
    FLOAT_KINDS,
    TOKEN_KINDS,
    ZEROS,
    Perturbation,
    apply,
    kinds_for,
    replace_one,
    replacement_mask,
)

PN = 8  # grid of the perturbation tests


def pool_of(subject, batch=2):
    return subject.draw_inputs(batch, torch.Generator().manual_seed(5))


def noise(p, size, dtype=torch.float64):
    return torch.randn(size, generator=torch.Generator().manual_seed(p.seed), dtype=dtype)


@pytest.mark.parametrize("cut", [0, 3, PN - 1])
@pytest.mark.parametrize("kind", FLOAT_KINDS[:4] + (ZEROS,))
def test_float_kinds_replace_exactly_the_future_with_their_values(kind, cut):
    subject = taps_subject("neither", PN)
    x = pool_of(subject)
    p = Perturbation(cut, kind, 10.0, seed=11)
    x1 = apply(subject, x, p)
    assert torch.equal(x1[:, :cut], x[:, :cut])  # the past untouched
    assert torch.equal(x, pool_of(subject))  # the pool itself untouched
    future, size = x1[:, cut:], (2, PN - cut, 1)
    expected = {
        "add": x[:, cut:] + 10.0 * noise(p, size),
        "normal": 10.0 * noise(p, size),
        "constant": torch.full(size, 10.0, dtype=torch.float64),
        ZEROS: torch.zeros(size, dtype=torch.float64),
    }
    if kind == "uniform":
        assert future.abs().max() <= 10.0 and future.abs().max() > 1.0
        assert not torch.equal(future, x[:, cut:])
    else:
        assert torch.equal(future, expected[kind])


def test_class_and_token_kinds():
    classes = make_subject(nn.Identity(), grid=(PN,), layout="BTC", classes=5)
    assert kinds_for(classes) == FLOAT_KINDS
    assert kinds_for(taps_subject("neither", PN)) == FLOAT_KINDS[:4]
    x = pool_of(classes)
    levels = apply(classes, x, Perturbation(2, "levels", 1.0, seed=3))[:, 2:]
    assert torch.equal(levels, levels.round()) and levels.min() >= 0 and levels.max() <= 4
    assert levels.unique().numel() > 1

    tokens = make_subject(nn.Embedding(7, 3), grid=(PN,), layout="BT->BTC", vocab=7)
    assert kinds_for(tokens) == TOKEN_KINDS
    t = pool_of(tokens)
    constant = apply(tokens, t, Perturbation(3, "constant", 1.0, seed=12))
    assert (constant[:, 3:] == 12 % 7).all() and torch.equal(constant[:, :3], t[:, :3])
    random = apply(tokens, t, Perturbation(0, "random", 1.0, seed=4))
    # a perturbation is a value: its own generator, never the global RNG
    assert torch.equal(random, apply(tokens, t, Perturbation(0, "random", 1.0, seed=4)))
    assert random.dtype == t.dtype and random.min() >= 0 and random.max() < 7
    assert not torch.equal(random, t)
    assert (apply(tokens, t, Perturbation(2, ZEROS, 0.0, seed=0))[:, 2:] == 0).all()


def test_nothing_to_replace_and_unknown_kinds():
    subject = taps_subject("neither", PN)
    x = pool_of(subject)
    assert torch.equal(apply(subject, x, Perturbation(PN, "normal", 1.0, seed=0)), x)
    with pytest.raises(ValueError, match="unknown perturbation kind 'wild'"):
        apply(subject, x, Perturbation(0, "wild", 1.0, seed=0))
    assert replacement_mask(subject, 5).tolist() == [False] * 5 + [True] * 3


def test_replace_one_takes_one_position():
    subject = taps_subject("neither", PN)
    x, x1 = pool_of(subject), torch.zeros(2, PN, 1, dtype=torch.float64)
    one = replace_one(subject, x, x1, 4)
    assert (one[:, 4] == 0).all() and torch.equal(one[:, :4], x[:, :4])
    assert torch.equal(one[:, 5:], x[:, 5:])


@pytest.mark.parametrize(
    "kind, magnitude, text",
    [
        (ZEROS, 0.0, "positions of rank >= 3 were replaced by zeros"),
        ("add", 0.01, "positions of rank >= 3 shifted by 0.01 x noise"),
        ("normal", 10.0, "positions of rank >= 3 replaced by normal values of scale 10"),
        ("uniform", 1.0, "positions of rank >= 3 replaced by uniform values in +-1"),
        ("constant", 100.0, "positions of rank >= 3 replaced by the constant 100"),
        ("levels", 1.0, "positions of rank >= 3 replaced by random class values"),
        ("random", 1.0, "positions of rank >= 3 replaced by random tokens"),
    ],
)
def test_describe(kind, magnitude, text):
    assert Perturbation(3, kind, magnitude, seed=1).describe() == text


def test_describe_token_constant():
    """'constant' is a kind of both floats and tokens: the vocabulary says which."""
    p = Perturbation(2, "constant", 100.0, seed=9)
    assert p.describe(vocab=4) == "positions of rank >= 2 replaced by the token 1"
    assert p.describe() == "positions of rank >= 2 replaced by the constant 100"
