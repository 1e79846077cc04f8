"""Red-team table of the certificate: small adversarial models, each checked against a ground
truth (tests/ground_truth.py: float64, every input position replaced by very different values:
zeros, large magnitudes, negatives, every token id). The bound must contain every dependency the
ground truth finds, and a model whose ground truth sees the future is never proved.

The first table holds the models the certificate once got wrong (values leaving torch through
numpy, lists, storages, dlpack or ``.data``; ``set_`` aliases; indices computed from the input);
the second, rules no other test reaches (writes through views, in-place on the input, rolls,
running maxima, attention with shifted or input-derived masks, circular padding...)."""

import copy
import pickle

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from ground_truth import C, Floats, T, Tokens, V, check
from torch import nn

from properties import make_subject
from properties.evidence.certificate import certify

pytestmark = pytest.mark.usefixtures("summary_form")  # every model on both forms (conftest)


def certify_and_compare(model, tokens=False):
    """The shared ground truth (tests/ground_truth.py), and a bound to compare it with."""
    cert, truth = check(model, tokens=tokens)
    assert cert.bound is not None, cert.reason
    return cert, truth


def _set_alias(s, x):
    c = torch.zeros_like(x)
    b = torch.empty(0, dtype=x.dtype)
    b.set_(c)  # b now shares c's (constant) storage ...
    c.copy_(x.flip(1))  # ... which is then written with the future
    return b


def _set_storage(s, x):
    y = x.flip(1).contiguous()
    z = torch.empty(0, dtype=y.dtype)
    return z.set_(y.untyped_storage(), 0, y.shape, y.stride()) + 0


def _dot_data(s, x):
    w = torch.zeros(1, T, C)
    w.data = x.flip(1).data  # no ATen op runs
    return w * 1


def _past_or_next(s, x):
    # output t reads x[t] or x[t + 1]: the choice depends on the past only, and this run
    # (drawn values << 100) reads x[t]: a bound from the run's indices would prove it
    i = torch.arange(T) + (x[0, 0, 0] > 100).long()
    return torch.cat([x, x[:, -1:]], 1)[:, i]


def _bool_mask_index(s, x):
    c = x[0, -1, 0] > 0
    keep = torch.stack([c, ~c] + [torch.ones((), dtype=torch.bool)] * (T - 2)).reshape(1, T)
    return x[keep].reshape(1, T - 1, C)[:, [0] * T]  # the first kept row: x[0] or x[1]


def _index_put_input_index(s, x):
    out = x.clone()
    out[0, (x[0, -1, 0] > 0).long().reshape(1)] = 5.0  # overwrites x[0] or x[1]
    return out


def _map(s, x):
    z = torch.zeros_like(x)
    return z.map_(x.flip(1), lambda a, b: b)  # a Python function of the values: no ATen op


def _float16_min_mask(s, x):
    m = torch.full((1, T, C), torch.finfo(torch.float16).min, dtype=torch.float16)
    return ((x.half().flip(1) + m) - m).to(x.dtype)  # float16's spacing there is 32


ONCE_UNSOUND = {
    "float16_min_mask_added_then_removed": _float16_min_mask,
    "map_": _map,
    "as_subclass": lambda s, x: x.flip(1).as_subclass(torch.Tensor) * 1,
    "parameter_over_future": lambda s, x: nn.Parameter(x.flip(1), requires_grad=False) * 1,
    "make_subclass": lambda s, x: torch.Tensor._make_subclass(torch.Tensor, x.flip(1)) * 1,
    "numpy_round_trip": lambda s, x: torch.from_numpy(x.numpy()[:, ::-1].copy()),
    "tolist_round_trip": lambda s, x: torch.tensor(x.tolist(), dtype=x.dtype).flip(1),
    "np_asarray": lambda s, x: torch.as_tensor(np.asarray(x.flip(1))).clone(),
    "set_alias": _set_alias,
    "set_storage": _set_storage,
    "bytes_of_storage": lambda s, x: torch.frombuffer(
        bytearray(bytes(x.flip(1).contiguous().untyped_storage())), dtype=x.dtype
    ).reshape(1, T, C),
    "dlpack": lambda s, x: torch.from_dlpack(
        torch.utils.dlpack.to_dlpack(x.flip(1).contiguous())) * 1,
    "pickle": lambda s, x: pickle.loads(pickle.dumps(x.flip(1))),
    "deepcopy": lambda s, x: copy.deepcopy(x.flip(1)),
    "dot_data_assignment": _dot_data,
    "index_past_or_next": _past_or_next,
    "gather_input_index": lambda s, x: x.gather(
        1, (x[:, -1:, :1] > 0).long().expand(1, T, C)),
    "index_select_input_index": lambda s, x: x.index_select(
        1, (x[0, -1, 0] > 0).long().reshape(1).expand(T).contiguous()),
    "bool_mask_index": _bool_mask_index,
    "index_put_input_index": _index_put_input_index,
}


EXACT = {"set_alias", "dot_data_assignment", "as_subclass", "parameter_over_future",
         "make_subclass", "float16_min_mask_added_then_removed"}  # followed exactly


@pytest.mark.parametrize("name", sorted(ONCE_UNSOUND))
def test_models_that_once_broke_the_bound(name):
    cert, truth = certify_and_compare(Floats(ONCE_UNSOUND[name]))
    assert not cert.proved
    if name not in EXACT:  # the conservative fallback says where it was used
        assert cert.path_dependent or cert.lost_precision


def _inplace_flip_add(s, x):
    x = x.clone()
    x[:, 1:] += x[:, :-1].flip(1)
    return x


def _copy_into_view(s, x):
    out = torch.zeros_like(x)
    out[:, :-1].copy_(x[:, 1:])
    return out


def _write_into_input(s, x):
    x[:, :-1] = x[:, 1:].clone()
    return x * 1


def _expand_then_inplace(s, x):
    e = torch.zeros(1, 1, C).expand(1, T, C).clone()
    e += x[:, -1:]
    return e


def _attention(mask=None, is_causal=False, length_q=T):
    def fn(s, x):
        q = x[:, :length_q].unsqueeze(1)
        k = x.unsqueeze(1)
        m = mask(x) if callable(mask) else mask
        o = F.scaled_dot_product_attention(q, k, k, attn_mask=m, is_causal=is_causal)[:, 0]
        return torch.cat([o, x[:, length_q:]], 1)
    return fn


def _finfo_mask(s, x):
    m = torch.full((T, T), torch.finfo(x.dtype).min, dtype=x.dtype).triu(1)
    return (torch.softmax(x[0] @ x[0].T + m, -1) @ x[0]).unsqueeze(0)


def _conv(**options):
    def init(s):
        s.conv = nn.Conv1d(C, C, **options)
    return init


def _mha(s):
    s.mha = nn.MultiheadAttention(C, 1, batch_first=True).eval()


def _encoder(s):
    layer = nn.TransformerEncoderLayer(C, 1, 8, dropout=0.0, batch_first=True)
    s.enc = nn.TransformerEncoder(layer, 2, enable_nested_tensor=False).eval()
    s.register_buffer("mask", nn.Transformer.generate_square_subsequent_mask(T))


def _crop(s, x):
    return s.conv(x.transpose(1, 2))[..., :T].transpose(1, 2)


def _unsqueeze_(s, x):
    v = x[:, :, 0].clone()
    v.unsqueeze_(-1)  # ruled on the old shape: the summary must follow the new one
    return v * 1


def _squeeze_(s, x):
    v = x[:, :, :1].clone()
    v.squeeze_(-1)
    return v.unsqueeze(-1) * 1


FUTURE = torch.ones(T, T, dtype=torch.bool).triu(1)
HANDLED = {  # name: (forward, init, proved)
    "unsqueeze_in_place": (_unsqueeze_, None, True),
    "squeeze_in_place": (_squeeze_, None, True),
    "vector_times_triangle": (lambda s, x: (x[0, :, 0] @ torch.ones(T, T).triu().to(x.dtype))
                              .reshape(1, T, 1), None, True),  # matmul's squeeze_
    "inplace_flip_add": (_inplace_flip_add, None, False),
    "copy_into_view": (_copy_into_view, None, False),
    "write_into_input": (_write_into_input, None, False),
    "expand_then_inplace": (_expand_then_inplace, None, False),
    "roll": (lambda s, x: x.roll(-1, 1), None, False),
    "roll_flat": (lambda s, x: x.roll(-1), None, False),
    "narrow_shift": (lambda s, x: torch.cat([x.narrow(1, 1, T - 1), x[:, :1]], 1), None, False),
    "unfold_window": (lambda s, x: torch.cat(
        [x.transpose(1, 2).unfold(2, 2, 1).sum(-1), x[:, -1:].transpose(1, 2)], 2
    ).transpose(1, 2), None, False),
    "cummax": (lambda s, x: x.cummax(1).values, None, True),
    "reverse_cumsum": (lambda s, x: x.flip(1).cumsum(1).flip(1), None, False),
    "where_input_condition": (lambda s, x: torch.where(x > 0, x.flip(1), x), None, False),
    "masked_fill_input_mask": (lambda s, x: x.masked_fill(x.flip(1) > 0, 0.0), None, False),
    "softmax_input_minus_inf": (lambda s, x: torch.softmax(
        torch.where(x > 0, x, torch.tensor(float("-inf"), dtype=x.dtype)), 1), None, False),
    "finfo_min_mask": (_finfo_mask, None, True),
    "sdpa_causal_shorter_queries": (_attention(is_causal=True, length_q=3), None, True),
    "sdpa_mask_shifted_by_one": (_attention(torch.ones(T, T, dtype=torch.bool).tril(1)), None,
                                 False),
    "sdpa_input_mask": (_attention(lambda x: (x[..., :1] @ x[..., :1].transpose(1, 2) > 0)
                                   .unsqueeze(1) | torch.eye(T, dtype=torch.bool)), None, False),
    "conv_circular": (_crop, _conv(kernel_size=2, padding=1, padding_mode="circular"), False),
    "conv_strided_dilated": (lambda s, x: s.conv(x.transpose(1, 2)).repeat_interleave(2, -1)[
        ..., :T].transpose(1, 2), _conv(kernel_size=3, stride=2, dilation=2, padding=4), True),
    "mha_bool_mask_no_weights": (lambda s, x: s.mha(x, x, x, attn_mask=FUTURE,
                                                    need_weights=False)[0], _mha, True),
    "encoder_mask_and_padding": (lambda s, x: s.enc(
        x, mask=s.mask, src_key_padding_mask=torch.zeros(1, T, dtype=x.dtype)), _encoder,
        True),
    "encoder_padding_only": (lambda s, x: s.enc(
        x, src_key_padding_mask=torch.zeros(1, T, dtype=torch.bool)), _encoder, False),
    "baddbmm_beta_zero": (lambda s, x: torch.baddbmm(
        x.flip(1), x, torch.eye(C, dtype=x.dtype).unsqueeze(0), beta=0), None, True),
}


@pytest.mark.parametrize("name", sorted(HANDLED))
def test_handled_models_bound_the_ground_truth(name):
    fn, init, proved = HANDLED[name]
    cert, truth = certify_and_compare(Floats(fn, init))
    assert cert.proved == proved, cert.reason


TOKEN_MODELS = {  # name: (forward, proved)
    "embedding_of_a_later_token": (lambda s, t: s.emb(t * 0 + t[:, -1:]), False),
    "running_sum_of_tokens": (lambda s, t: s.emb(t.cumsum(1) % V), True),
    "accumulate_at_input_index": (lambda s, t: s.emb(t).index_put(
        (torch.zeros(1, dtype=torch.long), (t[0, :1] > 100).long() + 1), torch.ones(1, 3),
        accumulate=True), True),
    "table_indexed_by_tokens": (lambda s, t: s.emb.weight[t.roll(-1, 1)], False),
}


@pytest.mark.parametrize("name", sorted(TOKEN_MODELS))
def test_token_models_bound_the_ground_truth(name):
    fn, proved = TOKEN_MODELS[name]
    cert, _ = certify_and_compare(Tokens(fn), tokens=True)
    assert cert.proved == proved, cert.reason


def test_the_tracer_puts_back_what_it_patched():
    """The reads it watches (numpy, storages, ``.data``, dlpack) are patched on torch only
    while a trace runs, even when the model raises."""
    before = {name: torch.Tensor.__dict__.get(name)
              for name in ("numpy", "tolist", "untyped_storage", "data", "_make_subclass")}
    to_dlpack = torch.utils.dlpack.to_dlpack

    def broken(s, x):
        raise RuntimeError("boom")

    certify(make_subject(Floats(lambda s, x: x.numpy() and x), grid=(T,), layout="BTC",
                         features=C))
    assert certify(make_subject(Floats(broken), grid=(T,), layout="BTC",
                                features=C)).status == "unavailable"
    after = {name: torch.Tensor.__dict__.get(name) for name in before}
    assert after == before and torch.utils.dlpack.to_dlpack is to_dlpack
