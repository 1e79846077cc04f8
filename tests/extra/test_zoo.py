"""The registry's models, audited: the facts of the lecture come out of the measurements.

Grids are the smallest on which every fact is visible (an interior output sees its whole
receptive field), to keep the suite fast; the CLI's zoo run uses the default grids.
"""

import pytest

from properties import audit
from properties.extra.zoo import compare, declared_facts, zoo_subject

GRIDS = {
    "nettoy1d": (24,),
    "nettoy1d_dilated": (48,),
    "pixelcnn": (8, 12),
    "pixelcnn_masked": (11, 20),
    "pixelcnn_gated": (13, 24),
    "pixelcnn_pe": (8, 12),
}


@pytest.mark.parametrize("name", sorted(GRIDS))
def test_registry_model_matches_its_declared_facts(name):
    subject = zoo_subject(name, GRIDS[name])
    result = audit(subject, max_examples=10)
    assert result.mode == "strict" and result.causal
    assert result.loss.holds
    # exact wherever the map covers every output (None: a sampled map)
    assert result.certificate.proved and result.certificate_exact is not False
    assert not result.unsound
    comparison = compare(declared_facts(name, subject.grid), result)
    assert comparison, "every registry model declares something"
    assert all(d["ok"] for d in comparison.values()), comparison


def test_lecture_dilated_net_sees_every_other_past_value():
    result = audit(zoo_subject("nettoy1d_dilated", (64,)), checks=["receptive_field"])
    rf = result.receptive_field
    assert (rf.size, rf.span, rf.holes) == (16, 31, 15)
    row = result.dependency_map.seen[rf.position]
    seen = row.nonzero().flatten().tolist()
    assert seen == list(range(rf.position - 31, rf.position, 2))


def test_blind_spot_only_in_the_masked_pixelcnn():
    sizes = {}
    for name in ("pixelcnn", "pixelcnn_masked", "pixelcnn_gated", "pixelcnn_pe"):
        result = audit(zoo_subject(name, GRIDS[name]), checks=["blind_spot"])
        sizes[name] = result.blind_spot.size
    assert sizes["pixelcnn_masked"] > 0
    assert sizes["pixelcnn"] == sizes["pixelcnn_gated"] == sizes["pixelcnn_pe"] == 0


def test_masked_pixelcnn_blind_spot_is_up_and_to_the_right():
    result = audit(zoo_subject("pixelcnn_masked", GRIDS["pixelcnn_masked"]), checks=["blind_spot"])
    bs = result.blind_spot
    i, j = divmod(bs.position, GRIDS["pixelcnn_masked"][1])
    rows, cols = bs.pixels.nonzero(as_tuple=True)
    assert (rows < i).all() and (cols > j).all()


def test_wavenet_receptive_field_is_one_block_of_dilations():
    subject = zoo_subject("wavenet")
    result = audit(subject, checks=["receptive_field"])
    rf = result.receptive_field
    assert (rf.size, rf.span, rf.holes) == (1024, 1024, 0)
    assert result.coverage.gradient["eval"].method == "sampled"
