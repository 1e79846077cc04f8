"""Soundness of the certificate, property-tested: on every model the strategies draw, on the zoo
and on the third-party models, the static bound contains the gradient map and explains every
perturbation-found violation, and a model with a leak is never proved. Precision: the causal
ones are proved, with the receptive field the dynamic evidence measures.

Every model is certified in both forms of summary (``deps.FORMS``: dense bits and runs), each
checked against the same dynamic evidence (gathered once: it is what costs)."""


import hf_models
import made
import pytest
import tcn_models
import torch
import torch_encoder
from hypothesis import given

from properties import audit, make_subject, strategies
from properties.evidence import facts, gradients
from properties.evidence.certificate import certify, deps
from properties.extra import zoo
from properties.subject.calls import float64_copy

EXAMPLES = 5


def subject_of(arch, **options):
    return make_subject(arch.build(), grid=arch.grid, layout=arch.layout, **options)


def certify_both(subject, **options) -> dict:
    """The certificate in each form of summary."""
    return {form: certify(subject, form=form, **options) for form in deps.FORMS}


def assert_sound(subject, certs: dict, *, train=False):
    """Each bound contains every dependency the audit finds (gradients, perturbations)."""
    result = audit(subject, checks=("causality",), train=train, max_examples=EXAMPLES)
    for form, cert in certs.items():
        for mode, dmap in result.maps.items():
            if mode == "train":  # stacked copies share batch statistics: not per-output rows
                continue
            outside = cert.outside(dmap.seen, dmap.outputs)
            assert len(outside) == 0, f"{form}: gradient dependencies outside the bound: " \
                f"{outside[:5]}"
        missing = cert.unexplained(subject, result.violations)
        assert not missing, f"{form}: violations the bound does not allow: {missing[:3]}"
        if result.causal is False:
            assert not cert.proved, form
    return result


@given(strategies.causal_architectures())
def test_drawn_causal_architectures_are_proved_with_their_analytic_receptive_field(arch):
    subject = subject_of(arch, predicts="current")
    certs = certify_both(subject)
    for cert in certs.values():
        assert (cert.status, cert.mode) == ("proved", "strict"), cert.reason
        rf = cert.receptive_field
        assert (rf.size, rf.span, rf.holes) == (arch.size(), arch.span(), arch.holes())
    assert_sound(subject, certs)


@given(strategies.planted_bugs())
def test_drawn_planted_bugs_are_never_proved_and_the_bound_holds(arch):
    train = arch.bug == "batchnorm_over_time"
    subject = subject_of(arch, predicts="current")
    certs = certify_both(subject, train=train)
    for cert in certs.values():
        assert cert.mode == arch.expected_train_mode
        assert not cert.proved
        if cert.mode == "none":  # the op where the future entered is named
            assert any(f.op for f in cert.forbidden if f.kind == "future")
    assert_sound(subject, certs, train=train)


GRIDS = {"wavenet": (160,), "pixelcnn": (8, 12), "pixelcnn_masked": (11, 20),
         "pixelcnn_gated": (13, 24), "pixelcnn_pe": (8, 12)}  # as in test_properties_zoo


@pytest.mark.parametrize("name", zoo.names())
def test_zoo_bound_is_the_measured_map(name):
    """The perturbations are compared with the bound by every default audit of the zoo
    (test_properties_zoo: the audit fails on a dependency outside the bound); here the whole
    gradient map must *equal* the bound."""
    subject = zoo.zoo_subject(name, grid=GRIDS.get(name))
    certs = certify_both(subject)
    s64, _ = float64_copy(subject)
    dmap = gradients.colored_map(s64, subject.draw_inputs(3, torch.Generator().manual_seed(7)))
    for form, cert in certs.items():
        assert cert.proved, form
        assert len(cert.outside(dmap.seen, dmap.outputs)) == 0, form
        assert cert.exact_for(dmap), form


V = hf_models.VOCAB
TOKENS = dict(grid=(12,), vocab=V, layout="BT", predicts="next", output="logits")
THIRD_PARTY = {
    "gpt2_sdpa": (lambda: hf_models.gpt2("sdpa"), TOKENS, "proved"),
    "gpt2_eager": (lambda: hf_models.gpt2("eager"), TOKENS, "proved"),
    "bert": (hf_models.bert, {**TOKENS, "output": "last_hidden_state"}, "not_proved"),
    "bert_decoder": (hf_models.bert_decoder, {**TOKENS, "output": "last_hidden_state"},
                     "proved"),
    "llama_sdpa": (lambda: hf_models.llama_small("sdpa"), {**TOKENS, "vocab": 1000}, "proved"),
    "llama_eager": (lambda: hf_models.llama_small("eager"), {**TOKENS, "vocab": 1000}, "proved"),
    "tcn_causal": (tcn_models.tcn_causal, dict(grid=(20,), features=2, layout="BCT",
                                               predicts="next"), "proved"),
    "tcn_noncausal": (tcn_models.tcn_noncausal, dict(grid=(20,), features=2, layout="BCT",
                                                     predicts="next"), "not_proved"),
    "encoder_mask": (lambda: torch_encoder.Encoder("mask"), dict(
        grid=(12,), features=2, layout="BTC", predicts="next"), "proved"),
    "encoder_nomask": (lambda: torch_encoder.Encoder("nomask"), dict(
        grid=(12,), features=2, layout="BTC", predicts="next"), "not_proved"),
    "made": (made.made, dict(grid=(made.D,), layout="BT->B(TC)", predicts="current",
                             order=made.ORDER), "proved"),
    "zuko": (made.zuko_made, dict(grid=(made.D,), layout="BT->B(CT)", predicts="current",
                                  order=made.ORDER), "proved"),
}


@pytest.mark.thirdparty
@pytest.mark.parametrize("name", sorted(THIRD_PARTY))
def test_third_party_models(name):
    factory, options, status = THIRD_PARTY[name]
    torch.manual_seed(0)
    subject = make_subject(factory(), **options)
    certs = certify_both(subject)
    for cert in certs.values():
        assert cert.status == status, cert.reason
        assert not cert.lost_precision and not cert.path_dependent
    result = assert_sound(subject, certs)
    if status == "proved" and result.dependency_map is not None:
        # the receptive field measured is the one proved (MADE's gradients may miss a path
        # through a dead ReLU: the bound is then the larger, exact structure)
        measured = facts.receptive_field(subject, result.dependency_map)
        assert all(measured.size <= c.receptive_field.size for c in certs.values())


@pytest.mark.thirdparty
def test_tcn_batch_norm_is_not_proved_in_training_mode():
    subject = make_subject(tcn_models.tcn_batchnorm(), grid=(20,), features=2, layout="BCT",
                           predicts="next")
    assert all(c.proved for c in certify_both(subject).values())
    certs = certify_both(subject, train=True)
    for cert in certs.values():
        assert cert.mode == "none" and "batch_norm" in cert.forbidden[0].op
    assert_sound(subject, certs, train=True)
