"""Hugging Face decoders (transformers, tiny random configs) held to contracts besides causality.

Packed documents, given as padding-free ``position_ids`` (``documents_as="position_ids"``):
transformers builds a block-diagonal mask from restarting positions in
``masking_utils._preprocess_mask_arguments`` only when it is given *no* attention mask and *no*
cache. What we measured (and confirmed by hand: change document 0's tokens, watch the logits of
documents 1 and 2):

- eager, sdpa and flex_attention, with ``use_cache=False``: the documents are kept (the change
  moves nothing, exactly 0.0), and the certificate proves it (flex_attention by hand only: the
  audit's memory probe, a dispatch mode, cannot run its higher-order op);
- the same models with ``use_cache`` left on (the default, in inference *and* training mode): the
  model builds a DynamicCache, the packing is not detected, document 1 sees document 0;
- an all-ones ``attention_mask`` passed besides (a collator that pads nothing): packing not
  detected either (transformers PR#46634's class of bug);
- the ``paged|eager`` backend: it builds no mask at all outside its continuous-batching
  scheduler, so it sees other documents and the future.

Mistral with ``sliding_window=4``: one layer keeps ``--window 4`` and breaks ``--window 3``; two
layers see 7 positions, which only per-module windows describe (each attention layer 4, the
model bound 2 * 3 + 1 = 7).
"""

import hf_contracts as H
import pytest

import properties
from properties.verdict import ContractName, Kind

pytestmark = pytest.mark.thirdparty

TOKENS = {"grid": (12,), "layout": "BT", "vocab": H.VOCAB, "output": "logits",
          "predicts": "next", "checks": ("causality",), "max_examples": 5}
PACKED = {"documents": [4, 3, 5], "documents_as": "position_ids"}


def audit(model, **options):
    return properties.audit_model(model, **{**TOKENS, **options})


@pytest.mark.parametrize(
    "factory", ["llama", "llama_eager", "mistral", "qwen2_eager", "gpt2"]
)
def test_padding_free_packing_keeps_the_documents(factory):
    r = audit(getattr(H, factory)(), **PACKED)
    assert r.passed and r.contracts == {ContractName.DOCUMENTS: True}


@pytest.mark.parametrize(
    "factory, options, future",
    [
        ("llama_cached", {}, False),  # a cache: packing not detected
        ("llama", {"forward": H.with_ones_mask, "output": None}, False),  # an all-ones mask
        ("llama_paged", {}, True),  # no mask at all
    ],
)
def test_where_the_backend_ignores_position_ids_documents_leak(factory, options, future):
    r = audit(getattr(H, factory)(), **PACKED, **options)
    assert r.contracts[ContractName.DOCUMENTS] is False
    assert r.causal is not future  # paged|eager is not even causal
    leak = next(v for v in r.violations if v.kind == Kind.DOCUMENT)
    doc = r.subject.contract.document
    assert doc(leak.input) < doc(leak.output)


def test_the_certificate_proves_packed_documents_for_llama_and_gpt2():
    for factory in ("llama", "gpt2_eager"):
        r = audit(getattr(H, factory)(), **PACKED, checks=("certificate",))
        assert r.passed and r.certificate.contracts["documents"] is True, factory


def test_mistral_keeps_its_sliding_window_and_not_one_less():
    assert audit(H.mistral_sliding(), window=H.WINDOW).passed
    r = audit(H.mistral_sliding(), window=H.WINDOW - 1)
    assert r.causal and r.contracts[ContractName.WINDOW] is False
    proof = audit(H.mistral_sliding(), window=H.WINDOW, checks=("certificate",))
    assert proof.passed and proof.certificate.receptive_field.max_span == H.WINDOW - 1


def test_two_sliding_layers_compose_and_need_per_module_windows():
    model = H.mistral_sliding_two()
    assert audit(model, window=H.WINDOW).contracts[ContractName.WINDOW] is False
    r = audit(model, window=H.WINDOW, window_modules="model.layers.*.self_attn")
    assert r.passed and r.subject.contract.width == 2 * (H.WINDOW - 1) + 1
    assert set(r.modules) == {"model.layers.0.self_attn", "model.layers.1.self_attn"}


def test_a_local_then_global_qwen2_is_unbounded_at_model_level():
    r = audit(H.qwen2_mixed(), window=H.WINDOW,
              window_modules=["model.layers.0.self_attn", "model.layers.1.self_attn=global"])
    assert r.passed and r.subject.contract.width is None
    wrong = audit(H.qwen2_mixed(), window=H.WINDOW, window_modules="model.layers.*.self_attn")
    assert not wrong.modules["model.layers.1.self_attn"].contracts[ContractName.WINDOW]
