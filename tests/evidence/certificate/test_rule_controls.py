"""The certificate's rules, one by one, each with a positive control: the same model with its
causal structure broken (a mask's polarity flipped, an input-derived condition, a write through
a view) is not proved."""


import leaky
import pytest
import torch
import torch.nn.functional as F
import torch_encoder
from paths import TARGETS
from torch import nn

from causal.layers import shift_right
from properties import make_subject
from properties.evidence.certificate import certify
from properties.extra import zoo
from properties.extra.architectures import Architecture
from properties.output.report import failure_summary

pytestmark = pytest.mark.usefixtures("summary_form")  # every control on both forms (conftest)
T = 10


class Lambda(nn.Module):
    def __init__(self, fn):
        super().__init__()
        self.fn = fn
        self.proj = nn.Linear(1, 4)  # gives the model a float dtype and weights

    def forward(self, x):  # (B, T, 1) -> (B, T, K)
        return self.fn(self, x)


def cert_of(fn, predicts="current", grid=(T,)):
    return certify(make_subject(Lambda(fn), grid=grid, layout="BTC", predicts=predicts))


def hand_attention(flip: bool):
    def fn(self, x):
        h = self.proj(shift_right(x.transpose(1, 2)).transpose(1, 2))  # (B, T, 4), strict
        scores = h @ h.transpose(1, 2)
        future = torch.ones(T, T, dtype=torch.bool).triu(1)
        scores = scores.masked_fill(~future if flip else future, float("-inf"))
        return torch.softmax(scores, -1) @ h

    return fn


def test_hand_written_masked_attention_is_proved_and_its_flipped_mask_is_not():
    # The shift makes the first row attend to a constant: its softmax is no dependency.
    good = cert_of(hand_attention(flip=False))
    assert (good.status, good.mode) == ("proved", "strict")
    assert good.receptive_field.size == T - 1
    bad = cert_of(hand_attention(flip=True))
    assert (bad.status, bad.mode) == ("not_proved", "none")


def test_sdpa_with_is_causal_and_with_a_float_mask():
    def sdpa(mask_kind):
        def fn(self, x):
            h = self.proj(x)[:, None]  # (B, 1, T, 4)
            if mask_kind == "causal":
                out = F.scaled_dot_product_attention(h, h, h, is_causal=True)
            else:
                mask = torch.full((T, T), float("-inf")).triu(1)
                if mask_kind == "flipped":
                    mask = torch.full((T, T), float("-inf")).tril(-1)
                out = F.scaled_dot_product_attention(h, h, h, attn_mask=mask)
            return out[:, 0]

        return fn

    assert cert_of(sdpa("causal"), "next").mode == "inclusive"
    assert cert_of(sdpa("float"), "next").status == "proved"
    assert cert_of(sdpa("flipped"), "next").mode == "none"


def test_additive_min_float_mask_is_a_mask():
    def fn(self, x):
        h = self.proj(x)
        mask = torch.zeros(T, T).masked_fill(torch.ones(T, T).triu(1).bool(), -3.4e38)
        return torch.softmax(h @ h.transpose(1, 2) + mask, -1) @ h

    assert cert_of(fn, "next").mode == "inclusive"


def test_where_on_an_input_derived_condition_is_not_a_constant():
    def fn(self, x):
        past = shift_right(x.transpose(1, 2)).transpose(1, 2)
        nxt = F.pad(x.transpose(1, 2), (-1, 1)).transpose(1, 2)
        return torch.where(nxt > 0, past, 2 * past)  # no gradient reaches x_{t+1}

    cert = cert_of(fn)
    assert cert.mode == "none"
    assert cert.forbidden[0].kind == "future"

    def constant_condition(self, x):
        past = shift_right(x.transpose(1, 2)).transpose(1, 2)
        nxt = F.pad(x.transpose(1, 2), (-1, 1)).transpose(1, 2)
        keep = torch.zeros(1, T, 1, dtype=torch.bool)  # never picks the future
        return torch.where(keep, nxt, past)

    assert cert_of(constant_condition).status == "proved"


def test_a_zero_computed_from_the_input_is_not_a_structural_zero():
    def fn(self, x):
        past = shift_right(x.transpose(1, 2)).transpose(1, 2)
        nxt = F.pad(x.transpose(1, 2), (-1, 1)).transpose(1, 2)
        gate = (x.abs() > 1e9).to(x.dtype)  # 0 at this run, not at every run
        return past + gate * nxt

    assert cert_of(fn).status == "not_proved"

    def constant_gate(self, x):
        past = shift_right(x.transpose(1, 2)).transpose(1, 2)
        nxt = F.pad(x.transpose(1, 2), (-1, 1)).transpose(1, 2)
        return past + torch.zeros(1, T, 1) * nxt

    assert cert_of(constant_gate).status == "proved"


def test_writes_through_views_reach_every_alias():
    def shift_in_place(self, x):  # (B, T, 1): a shift written into a buffer
        buf = torch.zeros_like(x)
        alias = buf.view(buf.shape[0], T)  # taken before the write
        buf[:, 1:] = x[:, :-1]
        return alias[..., None] + 0

    assert certify_subject(shift_in_place).status == "proved"

    def leak_in_place(self, x):
        buf = torch.zeros_like(x)
        alias = buf.view(buf.shape[0], T)
        buf[:, :-1] = x[:, 1:]
        return alias[..., None] + 0

    cert = certify_subject(leak_in_place)
    assert cert.mode == "none"

    def add_in_place(self, x):
        y = shift_right(x.transpose(1, 2)).transpose(1, 2).clone()
        alias = y[:, :, 0]
        y.add_(F.pad(x.transpose(1, 2), (-1, 1)).transpose(1, 2))  # the future, in place
        return alias[..., None]

    assert certify_subject(add_in_place).mode == "none"


def certify_subject(fn):
    return cert_of(fn)


def test_values_read_into_python_are_path_dependent_and_flow_everywhere():
    def fn(self, x):
        past = shift_right(x.transpose(1, 2)).transpose(1, 2)
        return past * float(x.sum())

    cert = cert_of(fn)
    assert cert.path_dependent
    assert cert.status == "not_proved"

    def nonzero(self, x):
        past = shift_right(x.transpose(1, 2)).transpose(1, 2)
        return past + 0 * x[x > 1e9].sum()

    cert = cert_of(nonzero)
    assert cert.path_dependent


def test_an_op_without_a_rule_is_named_in_lost_precision():
    def fn(self, x):
        past = shift_right(x.transpose(1, 2)).transpose(1, 2)
        return torch.renorm(past, 2, 0, 1.0)  # no rule; renormalising the whole mixes all

    cert = cert_of(fn)
    assert cert.status == "not_proved"
    assert any("renorm" in op for op in cert.lost_precision)
    assert "renorm" in cert.reason


def test_cumulative_sums_see_the_past_only():
    def fn(self, x):
        return torch.cumsum(x, dim=1) - x  # on paper strict, the bound keeps the present

    assert cert_of(fn, "next").mode == "inclusive"
    assert cert_of(lambda self, x: x.flip(1).cumsum(1).flip(1), "next").mode == "none"


@pytest.mark.parametrize("name", ["nettoy1d_dilated", "pixelcnn", "pixelcnn_gated"])
def test_lecture_models_are_proved_with_their_receptive_field(name):
    cert = certify(zoo.zoo_subject(name))
    assert (cert.status, cert.mode, cert.path_dependent) == ("proved", "strict", False)
    if name == "nettoy1d_dilated":
        rf = cert.receptive_field
        assert (rf.size, rf.span, rf.holes) == (16, 31, 15)


def test_planted_leaks_name_the_op_where_the_future_enters():
    subject = make_subject(leaky.same_padding(), grid=(16,), layout="BCT->BCT")
    cert = certify(subject)
    assert (cert.status, cert.mode) == ("not_proved", "none")
    assert "convolution" in cert.forbidden[0].op
    bn = make_subject(leaky.batchnorm_over_time(), grid=(16,), layout="BCT->BCT")
    assert certify(bn).status == "proved"  # inference: running statistics are constants
    cert = certify(bn, train=True)
    assert cert.mode == "none" and "batch_norm" in cert.forbidden[0].op


def test_transformer_encoder_fast_path_keeps_the_mask_it_is_given_only():
    def subject(kind):
        return make_subject(torch_encoder.Encoder(kind), grid=(12,), features=2,
                            layout="BTC", predicts="next")

    assert certify(subject("mask")).status == "proved"
    hint = certify(subject("hint"))  # the fast path ignores the is_causal hint
    assert hint.mode == "none"
    assert "_transformer_encoder_layer_fwd" in hint.forbidden[0].op


def test_masked_linear_layers_are_proved_in_their_own_order_only():
    """MADE: the exact zeros of the masked weights are structural; in raster order the same
    model is not causal."""
    import made

    options = dict(grid=(made.D,), layout="BT->B(TC)", predicts="current")
    cert = certify(make_subject(made.made(), order=made.ORDER, **options))
    assert (cert.status, cert.mode) == ("proved", "strict")
    ranks = made.RANKS
    assert torch.equal(cert.dense_bound(), ranks[None, :] < ranks[:, None])  # every earlier input
    assert certify(make_subject(made.made(), **options)).mode == "none"


def test_advanced_indexing_moves_dependencies_with_the_elements():
    def fn(self, x):
        order = torch.arange(T) - 1  # x_{t-1}, and x_{T-1} at t = 0
        return x[:, order.clamp(min=0)] * torch.ones(1, T, 1).index_fill(1, torch.tensor([0]), 0)

    assert cert_of(fn).status == "proved"

    def reversed_(self, x):
        return x[:, torch.arange(T - 1, -1, -1)]

    assert cert_of(reversed_).mode == "none"


def test_cli_checks_certificate_exit_code_and_json(tmp_path, capsys):
    from properties import cli

    target = str(TARGETS / "leaky.py")
    out = tmp_path / "r.json"
    common = ["--length", "16", "--layout", "BCT->BCT", "--checks", "certificate"]
    assert cli.main(["audit", f"{target}:causal", *common, "--json", str(out)]) == 0
    import json

    cert = json.loads(out.read_text())["certificate"]
    assert (cert["status"], cert["mode"], cert["path_dependent"]) == ("proved", "strict", False)
    assert set(cert) >= {"receptive_field", "forbidden", "lost_precision", "seconds"}
    assert cli.main(["audit", f"{target}:same_padding", *common, "--json", str(out)]) == 1
    cert = json.loads(out.read_text())["certificate"]
    assert cert["status"] == "not_proved" and "convolution" in cert["forbidden"][0]["op"]
    assert "not proved by the certificate" in capsys.readouterr().out


def test_the_audit_fails_loudly_when_the_bound_misses_a_dependency(monkeypatch):
    """Positive control of the cross-check: a deliberately unsound rule (convolutions
    depend on nothing) must be caught by the gradients and perturbations."""
    from properties import audit
    from properties.evidence.certificate import rules

    unsound = {op: (lambda ctx, args, kwargs, outs: [None] * len(outs))
               for op in (torch.ops.aten.convolution.default,)}
    monkeypatch.setattr(rules, "RULES", {**rules.RULES, **unsound})
    arch = Architecture(1, (2, 2), (1, 2), seed=1)
    subject = make_subject(arch.build(), grid=arch.grid, layout=arch.layout)
    result = audit(subject, checks=("causality", "certificate"), max_examples=3)
    assert result.certificate.proved  # the broken rule proves everything...
    assert result.unsound and not result.passed  # ...and the evidence refutes it
    assert result.notes[0].startswith("SOUNDNESS BUG")
    # the failure summary shows it even behind a note gathered with the evidence
    result.evidence_notes.insert(0, "a note gathered while running the model")
    assert "SOUNDNESS BUG" in failure_summary(result).splitlines()[2]
