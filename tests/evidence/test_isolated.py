"""Each kind of evidence proven on its own: the gradient facts, the perturbation sweep and the
Hypothesis search, each run alone against models that see only the present, only the future,
both, or neither, in inference and in training mode, with exact labels, cuts, modes and blamed
inputs. The evidences overlap in the audit; here none of them can hide behind another."""

from dataclasses import replace

import pytest
import torch
from hypothesis import given
from hypothesis import settings as hypothesis_settings
from known_models import CASES, MODES, expected_pairs, expected_sweep, shifted, taps_subject

from properties import audit, make_subject, strategies, verdict
from properties.evidence import facts
from properties.evidence.gradients import (
    GradientUnavailable,
    colored_map,
    dependency_map,
    distinct_weights,
    find_token_embedding,
    merge_maps,
    plain_map,
)
from properties.evidence.perturbation import Runner, hypothesis_search, perturbation_evidence, sweep
from properties.extra.architectures import Architecture, PlantedLeak
from properties.subject.calls import float64_copy, model_mode

LENGTH = 12


def gradient_facts(subject, training=False):
    s64, _ = float64_copy(subject)
    x = subject.draw_inputs(3, torch.Generator().manual_seed(0))
    with model_mode(s64, train=training):
        dmap = plain_map(s64, x)
    return facts.gradient_violations(subject, dmap)


def sweep_alone(subject, training=False):
    """The sweep over every cut, no search, through the public entry point."""
    with model_mode(subject, train=training):
        return perturbation_evidence(
            subject,
            cut_list=list(range(subject.n_positions)),
            max_examples=1,
            train=training,
            search=False,
        )


def search_alone(subject, kind, seed=0):
    runner = Runner(subject, seed=seed)
    with model_mode(subject, train=False):
        return hypothesis_search(
            runner, kind, max_examples=hypothesis_settings.default.max_examples, seed=seed
        )


# ---------------------------------------------------------------------------------------------
# Gradients alone


@pytest.mark.parametrize("case", CASES)
def test_gradient_facts_alone(case):
    violations, total = gradient_facts(taps_subject(case, LENGTH))
    pairs = {(v.output, v.input) for v in violations}
    assert pairs == expected_pairs(case, LENGTH)
    assert total == len(pairs)
    for v in violations:
        assert v.kind == ("present" if v.output == v.input else "future")
        assert v.evidence == "gradient" and v.effect > 0
    assert verdict.mode_of(violations) == MODES[case]


def test_gradient_facts_list_in_rank_order():
    violations, _ = gradient_facts(taps_subject("both", LENGTH))
    order = [(v.output, v.input) for v in violations]
    assert order == sorted(order)


# ---------------------------------------------------------------------------------------------
# The sweep alone


@pytest.mark.parametrize("training", [False, True], ids=["eval", "train"])
@pytest.mark.parametrize("case", CASES)
def test_sweep_alone(case, training):
    report = sweep_alone(taps_subject(case, LENGTH), training)
    assert {t: (c, kind) for t, (c, _, kind) in report.sweep.items()} == expected_sweep(
        case, LENGTH
    )
    assert all(effect > 0 for _, effect, _ in report.sweep.values())
    assert report.found == [] and report.examples == 0
    assert report.train is training
    assert report.cuts_swept == LENGTH
    violations = report.violations(taps_subject(case, LENGTH))
    assert verdict.mode_of(violations) == MODES[case]
    # a violation names the first replaced position as its input, in output rank order
    assert [(v.output, v.input) for v in violations] == sorted(
        (t, c) for t, (c, _) in expected_sweep(case, LENGTH).items()
    )
    for v in violations:
        assert v.described == f"sweep: positions of rank >= {v.input} were replaced"
        assert (v.source, v.train) == ("sweep", training)


@pytest.mark.parametrize("case", CASES)
def test_sweep_on_some_cuts_records_only_those(case):
    """The sampled path: a sweep over some cuts only, all stacked in one pass, in chunks with a
    shorter last one, or one cut per pass."""
    subject = taps_subject(case, LENGTH)
    cuts = [0, 3, 4, 9]
    for per_chunk in (len(cuts), 3, 1):
        runner = Runner(subject, seed=0, pool_size=1)
        records = sweep(runner, cuts, per_chunk=per_chunk)
        assert {t: (c, kind) for t, (c, _, kind) in records.items()} == expected_sweep(
            case, LENGTH, cuts
        )


# ---------------------------------------------------------------------------------------------
# The Hypothesis search alone


EXPECTED_SEARCH = {  # (kind searched) -> (cut, output, blamed input) or None
    "neither": {"future": None, "present": None},
    "present": {"future": None, "present": (0, 0, 0)},
    "future": {"future": (1, 0, 2), "present": (0, 0, 2)},  # present at cut 0, through x_2
    "both": {"future": (1, 0, 2), "present": (0, 0, 0)},
}


@pytest.mark.parametrize("kind", ["future", "present"])
@pytest.mark.parametrize("case", CASES)
def test_search_alone(case, kind):
    """The minimal counterexample: the earliest cut, the gentlest kind and smallest magnitude,
    the latest output it moves (future) and the input ``_localize`` blames."""
    violation, p, examples = search_alone(taps_subject(case, LENGTH), kind)
    expected = EXPECTED_SEARCH[case][kind]
    if expected is None:
        assert violation is None and p is None
        assert examples == hypothesis_settings.default.max_examples
        return
    assert (p.cut, violation.output, violation.input) == expected
    assert (p.kind, p.magnitude) == ("add", 1e-3)
    assert violation.kind == kind and violation.evidence == "perturbation"
    assert violation.effect > 0 and violation.source == "search"


def test_search_is_reproducible():
    """The same seed, the same search: the counterexample and the examples it took."""
    subject = make_subject(PlantedLeak(causal_net(), "large"), grid=(24,), layout="BCT")
    first, second = search_alone(subject, "future", seed=3), search_alone(subject, "future", seed=3)
    assert first[1] == second[1] and first[2] == second[2]
    assert (first[0].output, first[0].input) == (second[0].output, second[0].input)
    assert first[1].magnitude >= 100  # only large future values leak


def test_search_blames_the_input_that_moves_the_output():
    """A leak of x_{t+3} only from output 5 on: the shrunk cut is 6, the output 5, and the
    blamed input 8 (not the cut's own position 6, nor 7)."""

    class Late(torch.nn.Module):
        def forward(self, x):
            y = torch.cat([torch.zeros_like(x[:, :1]), x[:, :-1]], 1)
            leak = torch.cat([x[:, 3:], torch.zeros_like(x[:, :3])], 1)
            return y + leak * (torch.arange(x.shape[1]) >= 5)[:, None]

    subject = make_subject(Late().double(), grid=(LENGTH,), layout="BTC")
    violation, p, _ = search_alone(subject, "future")
    assert (p.cut, violation.output, violation.input) == (6, 5, 8)


def test_search_needs_several_inputs_blames_the_cut():
    """A leak that fires only when x_{t+2} and x_{t+3} are both large: no single replacement
    moves the output, so the cut's own position is blamed (cut 1, output 0)."""

    class Both(torch.nn.Module):
        def forward(self, x):
            a = torch.cat([x[:, 2:], torch.zeros_like(x[:, :2])], 1).abs()
            b = torch.cat([x[:, 3:], torch.zeros_like(x[:, :3])], 1).abs()
            return x + torch.relu(torch.minimum(a, b) - 50)

    subject = make_subject(Both().double(), grid=(LENGTH,), layout="BTC")
    violation, p, _ = search_alone(subject, "future")
    assert (p.cut, violation.output, violation.input) == (1, 0, 1)
    assert p.magnitude >= 100


@pytest.mark.parametrize("training", [False, True], ids=["eval", "train"])
def test_search_is_bounded_by_max_examples(training):
    subject = taps_subject("neither", LENGTH)
    with model_mode(subject, train=training):
        report = perturbation_evidence(
            subject, cut_list=[0], max_examples=7, train=training, search=True
        )
    assert report.examples == 2 * 7  # the future search, then the present one
    violation, p, examples = search_alone(subject, "future")
    assert examples == hypothesis_settings.default.max_examples != 7


# ---------------------------------------------------------------------------------------------
# Leaks the gradients cannot see: perturbations alone decide, in both modes


def causal_net():
    return Architecture(1, (2, 2), (1, 2), seed=1).build()


@pytest.mark.parametrize("kind", ["present_threshold", "present_integer"])
def test_present_only_through_a_step_is_seen_by_perturbations_alone(kind):
    subject = make_subject(PlantedLeak(causal_net(), kind), grid=(24,), layout="BCT")
    result = audit(subject, train=True)
    assert result.mode == "inclusive"
    assert {v.evidence for v in result.violations} == {"perturbation", "perturbation/train"}
    assert {v.kind for v in result.violations} == {"present"}
    assert all(v.input == v.output for v in result.violations)
    assert set(result.maps) == {"eval", "train"}  # the gradients ran, and saw nothing wrong
    # the sweep alone, and the search alone, see it
    report = sweep_alone(subject)
    assert {kind for _, _, kind in report.sweep.values()} == {"present"}
    violation, p, _ = search_alone(subject, "present")
    assert violation.output == violation.input == p.cut
    assert search_alone(subject, "future")[0] is None
    assert gradient_facts(subject)[0] == []


def test_a_perturbation_that_makes_nan_is_a_change():
    """Zeros in the next input make the prediction NaN (a fully masked attention row): the
    sweep must count that as a change at the output before the cut (a future leak)."""
    subject = make_subject(PlantedLeak(causal_net(), "nan"), grid=(16,), layout="BCT")
    report = sweep_alone(subject)
    assert {t: (c, kind) for t, (c, _, kind) in report.sweep.items()} == {
        t: (t + 1, "future") for t in range(15)
    }
    assert all(effect == float("inf") for _, effect, _ in report.sweep.values())
    result = audit(subject, checks=("causality",))
    assert result.mode == "none" and result.causal is False
    assert {v.evidence for v in result.violations} == {"perturbation"}


# ---------------------------------------------------------------------------------------------
# The strategies' planted bugs, each evidence alone


@given(
    strategies.planted_bugs(
        bugs=("no_shift", "same_padding", "mask_open_below"), max_depth=2, max_kernel_size=3
    )
)
def test_each_evidence_alone_finds_the_planted_mode(arch):
    subject = make_subject(arch.build(), grid=arch.grid, layout=arch.layout)
    expected = arch.expected_mode
    assert verdict.mode_of(gradient_facts(subject)[0]) == expected
    report = sweep_alone(subject)
    assert verdict.mode_of(report.violations(subject)) == expected
    # the search alone finds the leak's kind (its negative controls: test_search_alone)
    found, _, _ = search_alone(subject, "future" if expected == "none" else "present")
    assert found is not None and verdict.mode_of([found]) == expected


@given(strategies.planted_bugs(dims=(1,), bugs=("batchnorm_over_time",)))
def test_training_mode_leak_each_evidence_alone(arch):
    subject = make_subject(arch.build(), grid=arch.grid, layout=arch.layout)
    assert verdict.mode_of(gradient_facts(subject, training=True)[0]) == "none"
    assert verdict.mode_of(sweep_alone(subject, training=True).violations(subject)) == "none"
    assert verdict.mode_of(sweep_alone(subject).violations(subject)) == "strict"
    assert verdict.mode_of(gradient_facts(subject)[0]) == "strict"


# ---------------------------------------------------------------------------------------------
# The dependency map's entry points: methods, token models, shards


def dmap_pairs(dmap):
    return {(int(dmap.outputs[r]), int(s)) for r, s in dmap.seen.nonzero().tolist()}


@pytest.mark.parametrize("case", CASES)
def test_dependency_map_methods_agree(case):
    subject = taps_subject(case, LENGTH)
    x = subject.draw_inputs(3, torch.Generator().manual_seed(0))
    colored = dependency_map(subject, x)
    plain = dependency_map(subject, x, method="plain")
    some = dependency_map(subject, x, outputs=torch.tensor([3, 7]))
    expected = {(t, t + k) for t in range(LENGTH) for k in CASES[case] if 0 <= t + k < LENGTH}
    assert dmap_pairs(colored) == dmap_pairs(plain) == expected
    assert (colored.method, plain.method) == ("colored", "plain")
    assert dmap_pairs(some) == {(t, s) for t, s in expected if t in (3, 7)}
    assert torch.equal(colored.outputs, torch.arange(LENGTH))
    with pytest.raises(ValueError, match="unknown method 'fast'"):
        dependency_map(subject, x, method="fast")


def test_token_models_are_differentiated_at_their_embedding():
    """The map of a token model is taken at the embedding's output: the lagged model sees the
    previous token only, the leaky one the next as well."""

    class Tokens(torch.nn.Module):
        def __init__(self, offsets):
            super().__init__()
            self.offsets = offsets
            self.embed = torch.nn.Embedding(9, 4)
            self.head = torch.nn.Linear(4, 9)

        def forward(self, tokens):
            h = self.embed(tokens)
            return self.head(sum(shifted(h, k) for k in self.offsets))

    for offsets in [(-1,), (-1, 1)]:
        model = Tokens(offsets).double()
        subject = make_subject(model, grid=(LENGTH,), layout="BT->BTC", vocab=9)
        x = subject.draw_inputs(3, torch.Generator().manual_seed(0))
        expected = {(t, t + k) for t in range(LENGTH) for k in offsets if 0 <= t + k < LENGTH}
        assert dmap_pairs(dependency_map(subject, x)) == expected
        assert dmap_pairs(dependency_map(subject, x, method="plain")) == expected
        assert find_token_embedding(subject, x) is model.embed


@pytest.mark.parametrize("count", [2, 3])
def test_sharded_maps_merge_to_the_whole(count):
    subject = taps_subject("both", 40)
    x = subject.draw_inputs(3, torch.Generator().manual_seed(0))
    for make in (colored_map, plain_map):
        whole = make(subject, x, per_pass=200)
        parts = [make(subject, x, per_pass=200, shard=(i, count)) for i in range(count)]
        merged = merge_maps(parts)
        assert torch.equal(merged.outputs, whole.outputs)
        assert torch.equal(merged.seen, whole.seen)
        assert torch.equal(merged.strength, whole.strength)
        assert merged.method == whole.method
        assert sum(len(p.outputs) for p in parts) == 40
        assert merged.passes == sum(p.passes for p in parts)
        parts[0] = replace(parts[0], probe_silent=True)  # the shards' probe is the first's
        assert merge_maps(parts).probe_silent is True
    assert merged.row_of() == {t: t for t in range(40)}


def test_distinct_weights_are_a_permuted_even_grid():
    w = distinct_weights(7, 0)
    assert sorted(w.tolist()) == [1 + i / 7 for i in range(7)]
    assert w.dtype == torch.float64
    assert torch.equal(w, distinct_weights(7, 0)) and not torch.equal(w, distinct_weights(7, 1))


def test_dependency_map_passes_its_seed_on():
    """The seed picks the random output directions: the same seed, the same strengths."""
    subject = taps_subject("both", LENGTH)
    x = subject.draw_inputs(3, torch.Generator().manual_seed(0))
    some = torch.tensor([2, 5])
    for method, kwargs, make in [
        ("colored", {}, lambda seed: colored_map(subject, x, seed=seed)),
        ("plain", {"outputs": some}, lambda seed: plain_map(subject, x, outputs=some, seed=seed)),
    ]:
        default = dependency_map(subject, x, method=method, **kwargs)
        assert torch.equal(default.strength, make(0).strength)
        seeded = dependency_map(subject, x, method=method, seed=5, **kwargs)
        assert torch.equal(seeded.strength, make(5).strength)
        assert not torch.equal(seeded.strength, default.strength)


def test_token_embedding_is_the_one_that_reads_the_tokens():
    """A positional embedding called first (on positions, not tokens) is not the input; a
    token model without any embedding has no input to differentiate."""

    class Positional(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.pos = torch.nn.Embedding(LENGTH, 4)
            self.tok = torch.nn.Embedding(9, 4)

        def forward(self, tokens):
            return shifted(self.pos(torch.arange(tokens.shape[1]))[None] + self.tok(tokens), -1)

    model = Positional().double()
    subject = make_subject(model, grid=(LENGTH,), layout="BT->BTC", vocab=9)
    x = subject.draw_inputs(3, torch.Generator().manual_seed(0))
    assert find_token_embedding(subject, x) is model.tok
    assert dmap_pairs(dependency_map(subject, x)) == {(t, t - 1) for t in range(1, LENGTH)}

    def one_hot(tokens):
        return torch.nn.functional.one_hot(tokens, 9).double()

    class OneHot(torch.nn.Module):
        def forward(self, tokens):
            return one_hot(tokens)

    for bare in (one_hot, OneHot()):  # a function, a module: neither has an embedding
        plain = make_subject(bare, grid=(LENGTH,), layout="BT->BTC", vocab=9)
        with pytest.raises(GradientUnavailable, match="^no nn.Embedding reads the tokens, so"):
            dependency_map(plain, plain.draw_inputs(2, torch.Generator().manual_seed(0)))
