"""What a perturbation puts in place of the future, kind by kind, and how the loss check reads
the sweep's forward passes: the values behind every verdict of the perturbation evidence."""

import pytest
import torch
import torch.nn.functional as F
from evidence_models import shifted, taps_subject
from torch import nn

from properties import audit, make_subject
from properties.loss import LossEquivalence, LossRows, merge_losses
from properties.perturbations import (
    FLOAT_KINDS,
    TOKEN_KINDS,
    ZEROS,
    Perturbation,
    apply,
    kinds_for,
    replace_one,
    replacement_mask,
)

N = 8


def pool_of(subject, batch=2):
    return subject.draw_inputs(batch, torch.Generator().manual_seed(5))


def noise(p, size, dtype=torch.float64):
    return torch.randn(size, generator=torch.Generator().manual_seed(p.seed), dtype=dtype)


@pytest.mark.parametrize("cut", [0, 3, N - 1])
@pytest.mark.parametrize("kind", FLOAT_KINDS[:4] + (ZEROS,))
def test_float_kinds_replace_exactly_the_future_with_their_values(kind, cut):
    subject = taps_subject("neither", N)
    x = pool_of(subject)
    p = Perturbation(cut, kind, 10.0, seed=11)
    x1 = apply(subject, x, p)
    assert torch.equal(x1[:, :cut], x[:, :cut])  # the past untouched
    assert torch.equal(x, pool_of(subject))  # the pool itself untouched
    future, size = x1[:, cut:], (2, N - cut, 1)
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
    classes = make_subject(nn.Identity(), grid=(N,), layout="BTC", classes=5)
    assert kinds_for(classes) == FLOAT_KINDS
    assert kinds_for(taps_subject("neither", N)) == FLOAT_KINDS[:4]
    x = pool_of(classes)
    levels = apply(classes, x, Perturbation(2, "levels", 1.0, seed=3))[:, 2:]
    assert torch.equal(levels, levels.round()) and levels.min() >= 0 and levels.max() <= 4
    assert levels.unique().numel() > 1

    tokens = make_subject(nn.Embedding(7, 3), grid=(N,), layout="BT->BTC", vocab=7)
    assert kinds_for(tokens) == TOKEN_KINDS
    t = pool_of(tokens)
    constant = apply(tokens, t, Perturbation(3, "constant", 1.0, seed=12))
    assert (constant[:, 3:] == 12 % 7).all() and torch.equal(constant[:, :3], t[:, :3])
    random = apply(tokens, t, Perturbation(0, "random", 1.0, seed=4))
    assert random.dtype == t.dtype and random.min() >= 0 and random.max() < 7
    assert not torch.equal(random, t)
    assert (apply(tokens, t, Perturbation(2, ZEROS, 0.0, seed=0))[:, 2:] == 0).all()


def test_nothing_to_replace_and_unknown_kinds():
    subject = taps_subject("neither", N)
    x = pool_of(subject)
    assert torch.equal(apply(subject, x, Perturbation(N, "normal", 1.0, seed=0)), x)
    with pytest.raises(ValueError, match="unknown perturbation kind 'wild'"):
        apply(subject, x, Perturbation(0, "wild", 1.0, seed=0))
    assert replacement_mask(subject, 5).tolist() == [False] * 5 + [True] * 3


def test_replace_one_takes_one_position():
    subject = taps_subject("neither", N)
    x, x1 = pool_of(subject), torch.zeros(2, N, 1, dtype=torch.float64)
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


# ---------------------------------------------------------------------------------------------
# The loss check


class NextLogits(nn.Module):
    """Tokens in, logits over the same vocabulary out; output t sees tokens up to ``t + ahead``."""

    def __init__(self, vocab=6, ahead=0):
        super().__init__()
        self.ahead = ahead
        self.embed = nn.Embedding(vocab, vocab)

    def forward(self, tokens):
        return shifted(self.embed(tokens), self.ahead) + self.embed(tokens) * 0.5


@pytest.mark.parametrize(
    "ahead, predicts, holds",
    [(-1, "current", True), (0, "current", False), (0, "next", True), (1, "next", False)],
)
def test_loss_check_on_token_logits(ahead, predicts, holds):
    """Where the outputs are logits over the input's classes, the cross-entropies are compared
    too: the one-pass loss equals the masked one exactly when the check holds."""
    model = NextLogits(ahead=ahead) if ahead >= 0 else _Past()
    subject = make_subject(model, grid=(N,), layout="BT->BTC", vocab=6, predicts=predicts)
    result = audit(subject, checks=("loss",))
    loss = result.loss
    assert loss.holds is holds and result.passed is holds
    assert [r["position"] for r in loss.positions] == list(range(N))
    assert loss.one_pass_loss == pytest.approx(sum(r["one_pass_loss"] for r in loss.positions))
    assert loss.masked_loss == pytest.approx(sum(r["masked_loss"] for r in loss.positions))
    assert (loss.max_loss_diff == 0) is holds
    assert (loss.one_pass_loss == pytest.approx(loss.masked_loss, abs=1e-9)) is holds


class _Past(nn.Module):
    def __init__(self):
        super().__init__()
        self.embed = nn.Embedding(6, 6)

    def forward(self, tokens):
        return shifted(self.embed(tokens), -1)


def test_loss_rows_for_both_conventions():
    """At cut c the masked input is the current model's input for position c and the next
    model's for position c - 1; the next model's last position masks nothing."""
    subject = make_subject(NextLogits(ahead=0), grid=(4,), layout="BT->BTC", vocab=6)
    x = pool_of(subject)
    y_full = subject(x).detach()
    rows = LossRows(subject, x, y_full, tolerance=0.0)
    for c in range(4):
        masked = x.clone()
        masked[:, c:] = 0
        rows(c, subject(masked).detach())
    results = rows.results()
    assert [r["position"] for r in results["current"].positions] == [0, 1, 2, 3]
    assert [r["position"] for r in results["next"].positions] == [0, 1, 2, 3]
    assert results["next"].holds and not results["current"].holds  # it sees the present
    assert results["next"].positions[-1]["max_abs_diff"] == 0.0
    targets = subject.targets(x, "current")
    one = F.cross_entropy(y_full[:, 0].double(), targets[:, 0], reduction="sum") / 2
    assert results["current"].positions[0]["one_pass_loss"] == pytest.approx(float(one))


def test_loss_without_class_targets_and_merged():
    subject = taps_subject("present", N, predicts="current")
    result = audit(subject, checks=("loss",))
    loss = result.loss
    assert (loss.max_loss_diff, loss.one_pass_loss, loss.masked_loss) == (None, None, None)
    assert not loss.holds and loss.max_abs_diff == max(r["max_abs_diff"] for r in loss.positions)
    halves = [
        LossEquivalence.from_rows(loss.positions[4:], 1.0),
        LossEquivalence.from_rows(loss.positions[:4], 2.0),
    ]
    merged = merge_losses(halves)
    assert merged.positions == loss.positions and merged.tolerance == 2.0
    assert merged.max_abs_diff == loss.max_abs_diff
    empty = LossEquivalence.from_rows([], 0.5)
    assert (empty.max_abs_diff, empty.holds) == (0.0, True)
