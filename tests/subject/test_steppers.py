"""properties/subject/steppers.py: which way of stepping a model the incremental check finds,
and the one-line errors for the models it cannot step."""

import hf_models
import incremental_models as im
import pytest
import torch
from torch import nn

from properties import make_subject
from properties.errors import AdapterError
from properties.evidence.incremental import incremental_evidence
from properties.subject import steppers
from properties.subject.steppers import (
    HookStepper,
    HuggingFaceStepper,
    Stepper,
    TcnStepper,
    canonical_chunk,
    native_chunk,
    preserved_buffers,
    steppers_for,
)

SEQUENCE = dict(grid=(8,), layout="BTC", features=im.FEATURES)


def ready(subject):
    subject(subject.draw_inputs(1, torch.Generator().manual_seed(0)))  # the output layout
    return subject


def test_a_model_without_a_step_interface_gets_the_hook_to_write():
    subject = make_subject(nn.Linear(2, 3), **SEQUENCE)
    with pytest.raises(AdapterError) as info:
        steppers_for(subject)
    assert "Linear has no step interface the incremental check knows" in info.value.problem
    assert "def step(model, chunk, state)" in info.value.fix and "--step" in info.value.fix
    assert "\n" not in str(info.value)


def test_an_encoder_is_no_generator():
    subject = make_subject(hf_models.bert(), grid=(8,), layout="BT", vocab=50,
                           output="last_hidden_state")
    with pytest.raises(AdapterError, match="BertModel has no step interface"):
        steppers_for(subject)


def test_the_hook_comes_first_and_a_lm_gets_its_caches():
    gpt2 = hf_models.gpt2()
    tokens = dict(grid=(8,), layout="BT", vocab=50, output="logits")
    found = steppers_for(make_subject(gpt2, **tokens))
    assert [type(s) for s in found] == [HuggingFaceStepper, HuggingFaceStepper]
    assert [s.kind for s in found] == ["dynamic", "static"]
    assert found[1].capacity == 9 and found[1].limit == 9
    hooked = steppers_for(make_subject(gpt2, step=im.step, **tokens))
    assert [type(s) for s in hooked] == [HookStepper]


def test_a_hugging_face_model_steps_token_ids_only():
    with pytest.raises(AdapterError, match="steps token ids") as info:
        steppers_for(make_subject(hf_models.gpt2(), grid=(8,), layout="BTC", features=1))
    assert "--vocab" in info.value.fix


def test_a_step_hook_runs_along_one_axis_in_raster_order():
    with pytest.raises(AdapterError, match="along one time axis"):
        steppers_for(make_subject(nn.Identity(), grid=(3, 3), layout="BCHW", step=im.step))
    reverse = list(range(7, -1, -1))
    with pytest.raises(AdapterError, match="raster order"):
        steppers_for(make_subject(im.recurrent(), order=reverse, step=im.step, **SEQUENCE))


def test_a_step_hook_must_be_callable():
    with pytest.raises(AdapterError, match="step is a int, not a callable"):
        make_subject(im.recurrent(), step=3, **SEQUENCE)


def test_chunks_are_converted_to_and_from_the_models_layouts():
    subject = ready(make_subject(im.streaming_conv(), grid=(8,), layout="BCT->BCT",
                                 features=im.FEATURES))
    x = torch.arange(1 * 3 * im.FEATURES, dtype=torch.float64).reshape(1, 3, im.FEATURES)
    native = native_chunk(subject, x)
    assert native.shape == (1, im.FEATURES, 3) and native.dtype == torch.float32
    assert torch.equal(native[0, :, 1], x[0, 1].float())
    y = canonical_chunk(subject, torch.zeros(1, 3, 3), 3)  # (B, K, L) -> (B, L, K)
    assert y.shape == (1, 3, 3)
    with pytest.raises(AdapterError, match="a step's predictions have shape \\(1, 3, 2\\)"):
        canonical_chunk(subject, torch.zeros(1, 3, 2), 3)


def test_predictions_of_another_width_are_one_line():
    def step(model, chunk, state):
        return torch.zeros(1, chunk.shape[1], 5), state

    subject = ready(make_subject(im.recurrent(), step=step, **SEQUENCE))
    with pytest.raises(AdapterError, match="gives 5 values per position, the full pass 3"):
        incremental_evidence(subject, max_examples=1)


class Unpicklable:
    """A state deepcopy refuses (it holds a generator, as some samplers' states do)."""

    def __init__(self, h):
        self.h, self.generator = h, (i for i in range(3))


def test_a_state_that_cannot_be_copied_skips_the_branches_with_a_note():
    def step(model, chunk, state):
        y, h = model.step(chunk, None if state is None else state.h)
        return y, Unpicklable(h)

    report = incremental_evidence(ready(make_subject(im.recurrent(), step=step, **SEQUENCE)),
                                  max_examples=5)
    assert report.holds and all(o.schedule.branch is None for o in report.tried)
    assert any("cannot be deep-copied" in n and "save/restore not checked" in n
               for n in report.notes)


def test_buffers_a_streaming_layer_replaces_are_put_back():
    model = tcn_model()
    before = [b.clone() for b in model.get_buffers()]
    with preserved_buffers(model):
        model(torch.randn(1, 2, 5), inference=True)  # replaces each layer's buffer
        assert not all(torch.equal(a, b) for a, b in zip(before, model.get_buffers(), strict=True))
    assert all(torch.equal(a, b) for a, b in zip(before, model.get_buffers(), strict=True))


def tcn_model():
    import tcn_models

    return tcn_models.tcn_causal().eval()


def test_pytorch_tcn_is_found_by_its_streaming_interface():
    subject = make_subject(tcn_model(), grid=(8,), layout="BCT", features=2)
    assert [type(s) for s in steppers_for(subject)] == [TcnStepper]


class Doubler(nn.Module):
    def forward(self, x):
        return 2 * x


class DoublerStepper(Stepper):
    name = "a registered stepper"

    def step(self, x, begin, state):
        return 2 * x.to(self.subject.dtype), state


def test_a_registered_finder_steps_its_models(monkeypatch):
    monkeypatch.setattr(steppers, "FINDERS", list(steppers.FINDERS))
    steppers.register(lambda s: [DoublerStepper(s)] if isinstance(s.module, Doubler) else None)
    subject = ready(make_subject(Doubler(), grid=(6,), layout="BTC"))
    report = incremental_evidence(subject, max_examples=3)
    assert report.holds and report.variants == ["a registered stepper"]
