"""``python -m causal experiments`` and its model-free structure scores (causal/structure.py)."""

import json
import math

import numpy as np
import pytest
import torch

from causal import data, experiments, structure, train
from causal.cli import main

# ---------------------------------------------------------------------------------------------
# The structure scores, with positive controls: samples that break the structure score lower


def test_ks_distance_of_identical_and_of_disjoint_samples():
    assert structure.ks_distance([1, 2, 2, 3], [3, 2, 1, 2]) == 0.0
    assert structure.ks_distance([1, 1, 2], [5, 6]) == 1.0
    assert structure.ks_distance([1, 2], [2, 3]) == pytest.approx(0.5)  # ties at 2 handled


def test_flat_stretches_and_bumps_of_a_hand_made_sequence():
    x = torch.tensor([[0, 0, 3, 3, 3, 0, 5, 4, 0, 0], [1, 1, 1, 1, 1, 1, 1, 1, 1, 1]])
    assert structure.flat_stretches(x).tolist() == [2, 3, 1, 1, 1, 2, 10]
    assert structure.bumps(x).tolist() == [2, 1]


@pytest.fixture(scope="module")
def toy():
    return data.load("toy")


def test_toy_structure_of_held_out_data_is_high_and_of_broken_sequences_low(toy):
    held_out = structure.toy_structure(toy.val, toy.test)["structure"]
    order = torch.randperm(64, generator=torch.Generator().manual_seed(0))
    shuffled = structure.toy_structure(toy.val[:, order], toy.test)["structure"]  # no pieces left
    many = data.toy_sequences(500, 64, 32, generator=torch.Generator().manual_seed(1), nb_pieces=6)
    too_many_pieces = structure.toy_structure(many, toy.test)["structure"]
    assert held_out > 0.95
    assert shuffled < 0.6
    assert too_many_pieces < held_out - 0.05


def test_digit_scorer_prefers_digits_to_patchworks_of_digits():
    digits = data.load("digits")
    train_labels, _, test_labels = data.load_digit_labels()
    assert train_labels.shape == (1000,) and test_labels.shape == (447,)
    scorer = structure.DigitScorer.fit(
        digits.train, train_labels, digits.test, test_labels, digits.nb_classes
    )
    assert scorer.test_accuracy > 0.9, "the labels are split like the images"
    test = digits.test
    # "fragmentation": every quadrant from another test digit
    patchwork = test.clone()
    generator = torch.Generator().manual_seed(0)
    for rows in (slice(0, 4), slice(4, 8)):
        for cols in (slice(0, 4), slice(4, 8)):
            other = test[torch.randperm(len(test), generator=generator)]
            patchwork[:, rows, cols] = other[:, rows, cols]
    on_digits, on_patchwork = scorer.score(test), scorer.score(patchwork)
    assert on_digits["structure"] > on_patchwork["structure"] + 0.15
    assert on_digits["confident"] > on_patchwork["confident"]


# ---------------------------------------------------------------------------------------------
# Budget and reproducibility


def test_a_step_budget_stops_the_run_at_that_step(toy):
    small = data.make_dataset("toy", toy.train[:256], toy.val[:64], toy.test[:64], 32)
    torch.manual_seed(0)
    model = train.build_model("nettoy1d", 32, (64,))
    config = train.TrainConfig("nettoy1d", steps=11, batch_size=32)
    result = train.train(model, small, config, progress=False)
    assert config.epochs is None
    assert result.steps == 11 and result.epochs == 2  # 8 steps per epoch, the second one cut


def test_minutes_become_at_least_one_step_per_model():
    config = experiments.ExperimentConfig(minutes=1e-9)
    assert all(config.steps(name) == 1 for name in experiments.MODELS)
    assert experiments.ExperimentConfig(minutes=0.5).steps("wavenet") == round(
        30 * experiments.STEPS_PER_SECOND["wavenet"]
    )


def test_one_run_is_reproducible(tmp_path):
    task = experiments.Task("pixelcnn_pe", "digits", seed=4, steps=3, samples=5, out="")
    a = experiments.run_task(experiments.Task(**{**task.__dict__, "out": str(tmp_path / "a")}))
    b = experiments.run_task(experiments.Task(**{**task.__dict__, "out": str(tmp_path / "b")}))
    assert a["test_nll_nats"] == b["test_nll_nats"]
    assert torch.equal(a["samples"], b["samples"]) and a["samples"].shape == (5, 8, 8)
    assert torch.get_num_threads() >= 1 and not torch.are_deterministic_algorithms_enabled()


def test_causal_train_draws_its_pictures_with_the_cached_sampler(tmp_path, monkeypatch):
    import causal.cli

    calls = []
    real_sample = causal.cli.sample

    def recording_sample(*args, **kwargs):
        calls.append(kwargs.get("cache", False))
        return real_sample(*args, **kwargs)

    monkeypatch.setattr(causal.cli, "sample", recording_sample)
    argv = ["train", "--model", "nettoy1d", "--data", "toy", "--epochs", "1", "--batch-size"]
    assert main([*argv, "1000", "--out", str(tmp_path)]) == 0
    assert calls == ["auto"]


# ---------------------------------------------------------------------------------------------
# The command end to end, on a tiny budget


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("experiments")
    argv = ["experiments", "--minutes", "0.0005", "--seeds", "2", "--samples", "12"]
    assert main([*argv, "--jobs", "1", "--out", str(out)]) == 0
    return out


def _numbers(value):
    if isinstance(value, dict):
        for v in value.values():
            yield from _numbers(v)
    elif isinstance(value, list):
        for v in value:
            yield from _numbers(v)
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        yield value


def test_results_json_has_every_model_with_finite_numbers(tiny_run):
    results = json.loads((tiny_run / "results.json").read_text())
    assert list(results) == list(experiments.MODELS)
    for name, entry in results.items():
        assert entry["data"] == experiments.MODELS[name]
        for key in ("test_nll_nats", "test_nll_std", "structure", "receptive_field"):
            assert key in entry, (name, key)
        assert 0 < entry["test_nll_nats"] and entry["test_nll_std"] >= 0
        assert 0 <= entry["structure"] <= 1 and 0 <= entry["structure_data"] <= 1
        assert [s["seed"] for s in entry["per_seed"]] == [0, 1]
        assert all(math.isfinite(x) for x in _numbers(entry)), name
    assert results["nettoy1d"]["receptive_field"]["size"] == 5
    assert results["nettoy1d_dilated"]["receptive_field"]["holes"] == 15
    assert results["pixelcnn_masked"]["receptive_field"]["blind_spot"] > 0
    assert results["pixelcnn"]["receptive_field"]["blind_spot"] == 0


def test_results_json_holds_no_wall_clock_time(tiny_run):
    text = (tiny_run / "results.json").read_text()
    assert "seconds" not in text
    run = json.loads((tiny_run / "run.json").read_text())
    assert run["seconds"]["total"] > 0 and run["config"]["seeds"] == 2


def test_table_has_every_model_and_pictures_are_written(tiny_run):
    main_table, *details = (tiny_run / "results.md").read_text().split("\n\n")[1:-1]
    rows = [line for line in main_table.splitlines() if line.startswith("| `")]
    assert [row.split("`")[1] for row in rows] == list(experiments.MODELS)
    assert len(details) == 2 and "held-out data" in details[0]  # toy and digits parts
    for picture in ("toy.png", "digits.png"):
        assert (tiny_run / picture).read_bytes()[:4] == b"\x89PNG"
    samples = torch.load(tiny_run / "runs" / "wavenet" / "1" / "samples.pt")
    assert samples.shape == (12, 64) and np.all(samples.numpy() < 32)


@pytest.mark.parametrize(
    "argv, fragment",
    [
        (["--minutes", "0"], "--minutes: must be positive"),
        (["--seeds", "-1"], "--seeds: must be positive"),
    ],
)
def test_bad_experiment_flags_are_one_line(argv, fragment, tmp_path, capsys):
    assert main(["experiments", *argv, "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and fragment in err, err


def test_out_must_not_be_a_file(tmp_path, capsys):
    (tmp_path / "file").write_text("")
    assert main(["experiments", "--out", str(tmp_path / "file")]) == 2
    assert "is a file" in capsys.readouterr().err


def test_missing_libraries_are_named_before_any_training(tmp_path, capsys, monkeypatch):
    import importlib.util

    real_find_spec = importlib.util.find_spec

    def find_spec(name, *args):
        return None if name == "matplotlib" else real_find_spec(name, *args)

    monkeypatch.setattr(importlib.util, "find_spec", find_spec)
    assert main(["experiments", "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert "needs matplotlib" in err and "pip install" in err
    assert not (tmp_path / "out").exists()
