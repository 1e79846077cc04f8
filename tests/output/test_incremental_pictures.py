"""properties/output/pictures.py, the incremental check's picture: one panel per fixed
schedule (its chunk boundaries marked), one for Hypothesis' schedules, one for the minimal
divergence in both dtypes."""

import incremental_models as im
import numpy as np
import pytest

from properties import audit_model
from properties.output import pictures

TOKENS = dict(grid=(12,), layout="BT", vocab=im.VOCAB, step=im.step, max_examples=4)


def incremental_result(model):
    return audit_model(model, checks=("incremental",), **TOKENS)


def test_a_divergence_gets_its_own_panel_in_both_dtypes():
    result = incremental_result(im.rope_restart())
    panels = pictures.incremental_panels(result)
    rep = result.incremental
    fixed = panels[: rep.fixed]
    assert [p.title.split(":")[0] for p in fixed] == [
        o.schedule.describe() for o in rep.tried[: rep.fixed]]
    assert fixed[1].boundaries == list(range(1, 12))  # token by token
    last = panels[-1]
    assert last.title == "minimal divergence: chunks [1, 11]" and last.position == 1
    assert [label for label, _ in last.curves] == ["float32", "float64"]
    assert [label for label, _ in last.tolerances] == ["tolerance (float32)",
                                                       "tolerance (float64)"]
    assert last.boundaries == [1]
    np.testing.assert_array_equal(last.curves[0][1], rep.divergence.diffs.numpy())


def test_a_passing_check_draws_every_schedule_tried(tmp_path):
    pytest.importorskip("matplotlib")
    result = incremental_result(im.tiny_lm())
    panels = pictures.incremental_panels(result)
    drawn = sum(len(p.curves) for p in panels)
    assert drawn == len(result.incremental.tried)  # every schedule has its curve
    assert "more schedules" in panels[-1].title
    paths = pictures.draw(result, tmp_path, target="tiny")
    assert [p.name for p in paths] == ["tiny-incremental.png"] and paths[0].stat().st_size > 0

