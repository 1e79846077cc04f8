"""The loss check (properties/evidence/loss.py): one-pass predictions against the masked
per-position ones, rows for both conventions, cross-entropies summed over valid targets, and the
merge of shards' rows."""

import pytest
import torch
import torch.nn.functional as F
from known_models import shifted, taps_subject
from torch import nn

from properties import audit, make_subject
from properties.evidence.loss import LossEquivalence, LossRows, _compare, merge_losses

PN = 8  # grid of the perturbation tests


def pool_of(subject, batch=2):
    return subject.draw_inputs(batch, torch.Generator().manual_seed(5))


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
    subject = make_subject(model, grid=(PN,), layout="BT->BTC", vocab=6, predicts=predicts)
    result = audit(subject, checks=("loss",))
    loss = result.loss
    assert loss.holds is holds and result.passed is holds
    assert [r["position"] for r in loss.positions] == list(range(PN))
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
    subject = taps_subject("present", PN, predicts="current")
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


def test_compare_sums_cross_entropies_over_valid_targets_per_sample():
    full = torch.tensor([[2.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 3.0]])
    masked = torch.tensor([[0.0, 0.0, 0.0], [0.0, 1.0, 0.0], [1.0, 0.0, 0.0]])
    target = torch.tensor([0, 1, -1])  # class 0 is a class; -1 is none
    row = _compare(full, masked, target)
    one = F.cross_entropy(full[:2].double(), target[:2], reduction="sum") / 3
    two = F.cross_entropy(masked[:2].double(), target[:2], reduction="sum") / 3
    assert row["max_abs_diff"] == 3.0
    assert row["one_pass_loss"] == pytest.approx(float(one), rel=1e-12)
    assert row["masked_loss"] == pytest.approx(float(two), rel=1e-12)
    assert row["loss_diff"] == pytest.approx(abs(float(one - two)), rel=1e-12)
    none = _compare(full, masked, torch.tensor([-1, -1, -1]))
    assert (none["one_pass_loss"], none["masked_loss"], none["loss_diff"]) == (0.0, 0.0, 0.0)
    assert "loss_diff" not in _compare(full, masked, None)


def test_loss_summary_of_rows_with_class_targets():
    rows = [
        {
            "position": 1,
            "max_abs_diff": 0.5,
            "one_pass_loss": 1.0,
            "masked_loss": 2.0,
            "loss_diff": 1.0,
        },
    ]
    one = LossEquivalence.from_rows(rows, 0.25)
    assert (one.max_abs_diff, one.max_loss_diff, one.tolerance, one.holds) == (
        0.5,
        1.0,
        0.25,
        False,
    )
    assert (one.one_pass_loss, one.masked_loss) == (1.0, 2.0)


def test_loss_targets_per_convention_and_outputs_that_are_not_logits():
    subject = make_subject(NextLogits(ahead=0), grid=(4,), layout="BT->BTC", vocab=6)
    x = pool_of(subject)
    y_full = subject(x).detach()
    rows = LossRows(subject, x, y_full, tolerance=0.0)
    rows(1, y_full)
    nxt = rows.results()["next"].positions[0]  # position 0 predicts token x_1
    expected = F.cross_entropy(y_full[:, 0].double(), x[:, 1], reduction="sum") / 2
    assert nxt["one_pass_loss"] == pytest.approx(float(expected), rel=1e-12)
    features = make_subject(nn.Embedding(6, 3), grid=(PN,), layout="BT->BTC", vocab=6)
    result = audit(features, checks=("loss",))  # 3 features are no logits over 6 tokens
    assert result.loss.max_loss_diff is None and result.loss.one_pass_loss is None
