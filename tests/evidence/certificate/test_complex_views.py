"""``view_as_complex`` / ``view_as_real`` (RoPE in complex form: DeepSeek-V2, Llama's original
code): each complex number is its two parts, each part its number; against the brute-force
ground truth on both forms, with a control that rotates along time (it sees the future)."""

import pytest
import torch
from ground_truth import Floats, T, check

pytestmark = pytest.mark.usefixtures("summary_form")  # both forms (conftest)

ROTATION = torch.polar(torch.ones(T), torch.arange(T) * 0.3)  # one rotation per position


def _rope(shift):
    def fn(s, x):
        z = torch.view_as_complex(x.contiguous())  # (1, T) complex: the 2 features of t
        z = z * ROTATION.to(z.dtype)
        return torch.view_as_real(z.roll(shift, 1) if shift else z)
    return Floats(fn)


@pytest.mark.parametrize("shift, proved", [(0, True), (-1, False)])
def test_complex_rotation_per_position_and_a_control_along_time(shift, proved):
    cert, truth = check(_rope(shift))
    assert cert.proved == proved, cert.reason
    if proved:
        assert torch.equal(cert.dense_bound(), torch.eye(T, dtype=torch.bool))
    else:
        assert bool(truth.triu(1).any())
