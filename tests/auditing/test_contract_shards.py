"""A contract's evidence in shards: merged, the report of one process; through the shard file
too. Per-module windows are refused in shards (each module is audited whole)."""

import contracts as T
import pytest
from reports import timeless_report as report

from properties import audit, make_subject
from properties.auditing import shard_file
from properties.auditing.gather import merge
from properties.errors import AdapterError


def subject(model, **contracts):
    return make_subject(model, grid=(12,), layout="BTC", features=2, predicts="next",
                        **contracts)


@pytest.mark.parametrize(
    "model, contracts",
    [
        (T.attention_ignoring_documents, {"documents": [4, 3, 5], "documents_as": "position_ids"}),
        (T.sliding_window_shrunk, {"window": 4, "window_exact": True}),
        (T.capacity_router, {"batch_independent": True}),
    ],
)
def test_merged_shards_of_a_contract_equal_the_whole_audit(model, contracts):
    whole = audit(subject(model(), **contracts), max_examples=8)
    parts = [audit(subject(model(), **contracts), max_examples=8, shard=(i, 3)) for i in range(3)]
    assert report(merge(parts)) == report(whole)
    loaded = [shard_file.load(shard_file.dump(p, 1 << 30), "part") for p in parts]
    # a shard file holds no model: where its class is defined comes from the part's JSON
    # (the CLI's merge copies it, tests/interfaces), not from the evidence
    assert report(merge(loaded)) == {**report(whole), "model_source": None}


def test_the_loss_of_a_packed_row_is_the_sum_of_its_documents():
    packed = audit(subject(T.packed_attention(), documents=[4, 3, 5],
                           documents_as="position_ids"), checks=("loss",))
    assert packed.loss.holds and packed.loss.max_abs_diff == 0
    leaky = audit(subject(T.attention_ignoring_documents(), documents=[4, 3, 5],
                          documents_as="position_ids"), checks=("loss",))
    assert not leaky.loss.holds
    worst = max(leaky.loss.positions, key=lambda r: r["max_abs_diff"])["position"]
    assert worst >= 4  # a later document's prediction, not document 0's


def test_per_module_windows_are_not_sharded():
    s = subject(T.two_sliding_layers(), window=4, window_modules="layers.[0-9]")
    with pytest.raises(AdapterError, match="cannot be sharded"):
        audit(s, shard=(0, 2))
