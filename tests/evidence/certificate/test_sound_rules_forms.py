"""cert-sound's rules (sorts, top-k, glu, gathers, scatters, ``as_strided``, recurrent layers,
triangular solves, FFT convolutions) on both forms of summary (conftest's ``summary_form``):
each case against its brute-force ground truth (:mod:`ground_truth`) and its exact expected
bound, with a positive control per family (the same op along time: it sees the future and must
not be proved), and the two forms' bounds equal, bit for bit."""

import pytest
import torch
from ground_truth import C, Floats, T, check
from torch import nn

from properties import make_subject
from properties.evidence.certificate import certify, deps

pytestmark = pytest.mark.usefixtures("summary_form")  # every case on both forms (conftest)

EYE = torch.eye(T, dtype=torch.bool)
PREFIX = torch.ones(T, T, dtype=torch.bool).tril()
EVERY = torch.ones(T, T, dtype=torch.bool)


def along_time(op):
    """``op`` on ``(1, C, T)``: the op's last axis is time."""
    return lambda s, x: op(x.transpose(1, 2)).transpose(1, 2)


def _buffers(**tensors):
    def init(m):
        for name, t in tensors.items():
            m.register_buffer(name, t)
    return init


def _gru(bidirectional=False):
    def init(m):
        torch.manual_seed(0)
        m.rnn = nn.GRU(C, C, batch_first=True, bidirectional=bidirectional)
    return init


def _lstm(m):
    torch.manual_seed(0)
    m.rnn = nn.LSTM(C, C, batch_first=True)


LOWER = torch.randn(T, T, generator=torch.Generator().manual_seed(3)).tril() + 4 * torch.eye(T)
INDEX = torch.tensor([[1, 0]]).expand(T, C).unsqueeze(0)  # (1, T, C): the features swapped


def _scatter(s, x):
    out = torch.zeros_like(x)
    return out.scatter(2, INDEX.expand_as(x), x)


def _gather_by_values(s, x):
    # which feature is picked depends on the values of the same position only
    picked = x.argmax(2, keepdim=True)
    return x.gather(2, picked) * 1


def _gather_by_values_along_time(s, x):
    picked = x[:, :, :1].argmax(1, keepdim=True).expand(1, T, C)  # a time index from all
    return x.gather(1, picked) * 1


def _strided_transpose(s, x):
    y = x.transpose(1, 2).contiguous()  # (1, C, T): storage in (c, t) order
    return y.as_strided((1, T, C), (C * T, 1, T))  # read back as (t, c): x itself


CASES = {  # name: (model, expected bound or None, proved)
    "sort_features": (Floats(lambda s, x: x.sort(2).values), EYE, True),
    "sort_time": (Floats(lambda s, x: x.sort(1).values), EVERY, False),
    "topk_features": (Floats(lambda s, x: x.topk(1, 2).values), EYE, True),
    "topk_time": (Floats(lambda s, x: x.topk(2, 1).values.sum(1, keepdim=True)
                         .expand(1, T, C) * 1), EVERY, False),
    "glu_features": (Floats(lambda s, x: torch.nn.functional.glu(x, 2)), EYE, True),
    "glu_time": (Floats(lambda s, x: torch.nn.functional.glu(
        x[:, : T // 2 * 2], 1).repeat(1, 2, 1)), None, False),
    "scatter_features": (Floats(_scatter), EYE, True),
    "gather_by_values": (Floats(_gather_by_values), EYE, True),
    "gather_by_values_along_time": (Floats(_gather_by_values_along_time), EVERY, False),
    "index_select_time": (Floats(lambda s, x: x.index_select(1, torch.arange(T).flip(0))),
                          EYE.flip(1), False),
    "as_strided_transpose": (Floats(_strided_transpose), EYE, True),
    "gru": (Floats(lambda s, x: s.rnn(x)[0], _gru()), PREFIX, True),
    "lstm": (Floats(lambda s, x: s.rnn(x)[0], _lstm), PREFIX, True),
    "gru_bidirectional": (Floats(lambda s, x: s.rnn(x)[0], _gru(True)), EVERY, False),
    "solve_lower": (Floats(lambda s, x: torch.linalg.solve_triangular(s.L, x[0], upper=False)
                           .unsqueeze(0), _buffers(L=LOWER.clone())), PREFIX, True),
    "solve_upper": (Floats(lambda s, x: torch.linalg.solve_triangular(s.U, x[0], upper=True)
                           .unsqueeze(0), _buffers(U=LOWER.T.clone())), PREFIX.T, False),
}


def _fft_conv(m):
    """A long convolution by FFT (S4/Hyena-style): padded to 2T, nothing wraps around."""
    def run(x, length):
        xt = x.transpose(1, 2)  # (1, C, T)
        spectrum = torch.fft.rfft(xt, n=length) * torch.fft.rfft(m.k, n=length)
        return torch.fft.irfft(spectrum, n=length)[..., :T].transpose(1, 2)
    return run


def _fft(length):
    def init(m):
        m.register_buffer("k", torch.linspace(1.0, 2.0, T).expand(C, T).clone())
    return Floats(lambda s, x: _fft_conv(s)(x, length), init)


def _certify(model, form=None):
    subject = make_subject(model, grid=(T,), predicts="next", layout="BTC", features=C)
    return certify(subject, form=form)


@pytest.mark.parametrize("name", sorted(CASES))
def test_a_rule_holds_its_ground_truth_and_its_exact_bound(name):
    model, expected, proved = CASES[name]
    cert, truth = check(model)  # bound contains every dependency; no false proof
    assert cert.proved == proved, cert.reason
    if expected is not None:
        assert torch.equal(cert.dense_bound(), expected), cert.dense_bound().int()
    if not proved:
        assert bool(truth.triu(1).any())  # the control does see the future


def test_a_zero_padded_fft_convolution_is_proved_exactly_and_a_circular_one_is_not():
    # (float rounding of the transforms moves outputs by ~1e-16: the proof is of the exact
    # convolution, so the comparison is with the expected bound, not a bit-exact ground truth)
    linear = _certify(_fft(2 * T))
    assert linear.proved and torch.equal(linear.dense_bound(), PREFIX), linear.reason
    circular = _certify(_fft(T))  # wraps around: output 0 sees the last input
    assert not circular.proved and bool(circular.dense_bound()[0, T - 1])


def test_both_forms_give_the_same_bound_bit_for_bit():
    for name, (model, _, _) in sorted(CASES.items()) + [("fft", (_fft(2 * T), None, True))]:
        found = [_certify(model, form).dense_bound() for form in deps.FORMS]
        assert torch.equal(*found), name
