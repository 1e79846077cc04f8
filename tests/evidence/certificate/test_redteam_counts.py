"""Red-team rows found while merging cert-scale and cert-sound: summaries united by *counting*
(a storage's aliases, a scatter's or an accumulating index_put's sources on one element) in
uint8 wrapped to 0 at 256, and a count of 0 is a proof of no dependency. Each model makes exactly
256 of them meet on one element and sees the future; on both forms, its bound must hold every
dependency of the ground truth (:mod:`ground_truth`) and it must not be proved."""

import pytest
import torch
from ground_truth import Floats, T, check

pytestmark = pytest.mark.usefixtures("summary_form")  # both forms (conftest)
MANY = 256


def _aliases(s, x):
    y = x.flip(1).clone()
    keep = [y.view_as(y) for _ in range(MANY - 1)]  # with y: 256 tensors on its storage
    y[:, 0].zero_()  # a write through a view: every alias is recomputed from the storage
    assert len(keep) == MANY - 1
    return y * 1


def _scatter_add(s, x):
    src = x.flip(1)[:, :, :1].expand(1, T, MANY).contiguous()
    index = torch.zeros(1, T, MANY, dtype=torch.long)  # 256 sources on one target
    return torch.zeros(1, T, 1, dtype=x.dtype).scatter_add(2, index, src)


def _index_put_accumulate(s, x):
    src = x.flip(1)[0, :, :1].expand(T, MANY).contiguous()
    where = (torch.tensor([0]), torch.arange(T)[:, None], torch.zeros(1, MANY, dtype=torch.long))
    return torch.zeros(1, T, 1, dtype=x.dtype).index_put(where, src, accumulate=True)


@pytest.mark.parametrize("fn", [_aliases, _scatter_add, _index_put_accumulate],
                         ids=lambda f: f.__name__)
def test_256_dependencies_counted_on_one_element_are_not_none(fn):
    cert, truth = check(Floats(fn))
    assert bool(truth.triu(1).any())  # the adversary sees the future
    assert not cert.proved, cert.reason
