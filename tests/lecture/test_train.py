"""causal/train.py: the one-pass loss, the loop, checkpoints and metrics."""

import json
import math

import pytest
import torch
import torch.nn.functional as F

from causal import data, train
from causal.layers import Normalize


@pytest.fixture(scope="module")
def toy():
    """A small toy data set: a few seconds of training are enough to see it learn."""
    x = data.toy_sequences(768, 32, 32, generator=torch.Generator().manual_seed(0))
    return data.make_dataset("toy", x[:512], x[512:640], x[640:], 32)


def _model(name, dataset, seed=0):
    torch.manual_seed(seed)
    model = train.build_model(name, dataset.nb_classes, dataset.grid)
    train.set_normalization(model, dataset.mean, dataset.std)
    return model


@pytest.mark.parametrize("name, grid", [("nettoy1d", (12,)), ("pixelcnn", (4, 5))])
def test_one_pass_loss_equals_the_masked_per_position_losses(name, grid):
    """Slide 4: the loss computed once equals the sum of the losses of f_t(x_<t, 0, ..., 0)."""
    model = train.build_model(name, 6, grid).double()
    x = torch.randint(6, (3, *grid), generator=torch.Generator().manual_seed(0))
    one_pass = train.sequence_loss(model, x, reduction="sum")
    flat, total = x.reshape(3, -1), 0.0
    for t in range(flat.size(1)):
        masked = flat.clone()
        masked[:, t:] = 0  # the lecture's zeros for unknown values
        logits = model(data.to_model_input(masked.view_as(x), torch.float64))
        logits = logits.reshape(3, -1, 6)[:, t]
        total = total + F.cross_entropy(logits, flat[:, t], reduction="sum")
    torch.testing.assert_close(one_pass, total)


def test_set_normalization_writes_every_normalize_buffer():
    model = train.build_model("pixelcnn_gated", 17, (8, 8))
    train.set_normalization(model, 4.5, 6.25)
    norms = [m for m in model.modules() if isinstance(m, Normalize)]
    assert norms and all(m.mean.item() == 4.5 and m.std.item() == 6.25 for m in norms)


def test_bits_per_dim_of_a_uniform_model_is_log2_of_the_classes():
    assert train.bits_per_dim(64 * math.log(17), (8, 8)) == pytest.approx(math.log2(17))


def test_training_lowers_the_loss_on_toy_data(toy):
    model = _model("nettoy1d", toy)
    before = train.nll_nats(model, toy.val)
    config = train.TrainConfig("nettoy1d", epochs=3, batch_size=32, lr=3e-3)
    result = train.train(model, toy, config, progress=False)
    after = train.nll_nats(result.model, toy.val)
    assert after < 0.7 * before, (before, after)
    assert result.epochs == 3 and result.steps == 3 * 16
    assert result.best_val_nll == min(h["val_nll_nats"] for h in result.history)
    assert after == pytest.approx(result.best_val_nll)
    assert not result.model.training
    assert result.model.normalize.mean.item() == pytest.approx(toy.mean)


def test_a_time_budget_stops_the_run(toy):
    model = _model("nettoy1d", toy)
    config = train.TrainConfig("nettoy1d", minutes=1.5 / 60, batch_size=8)
    result = train.train(model, toy, config, progress=False)
    assert config.epochs is None
    assert 1.5 <= result.seconds < 10
    assert result.history, "at least one (possibly cut) epoch is evaluated"


def test_training_stops_when_validation_stalls(toy):
    model = _model("nettoy1d", toy)
    config = train.TrainConfig("nettoy1d", epochs=50, lr=0.0, stop_patience=4)  # nothing moves
    result = train.train(model, toy, config, progress=False)
    assert result.best_epoch == 1 and result.epochs == 1 + 4


def test_nll_is_evaluated_in_eval_mode_without_gradients(toy):
    model = _model("nettoy1d", toy).train()
    nats = train.nll_nats(model, toy.val[:10], batch_size=3)
    assert model.training, "nll_nats restores the mode it found"
    manual = train.sequence_loss(model, toy.val[:10], reduction="sum").item() / 10
    assert nats == pytest.approx(manual, rel=1e-5)


# ---------------------------------------------------------------------------------------------
# run(): checkpoint and metrics


@pytest.fixture(scope="module")
def toy_run(toy, tmp_path_factory):
    out = tmp_path_factory.mktemp("run")
    config = train.TrainConfig("nettoy1d_dilated", data="toy", epochs=1, seed=3)
    return out, train.run(config, toy, out, progress=False)


def test_metrics_json_has_the_promised_keys(toy_run, toy):
    out, metrics = toy_run
    on_disk = json.loads((out / "metrics.json").read_text())
    assert on_disk == metrics
    for split in ("train", "val", "test"):
        assert metrics[f"{split}_nll_nats"] > 0
        assert metrics[f"{split}_bits_per_dim"] == pytest.approx(
            metrics[f"{split}_nll_nats"] / (32 * math.log(2))
        )
    assert (
        metrics["test_nll_nats"] < metrics["uniform_nll_nats"] == pytest.approx(32 * math.log(32))
    )
    assert {"epochs", "seconds", "model", "data", "seed"} <= metrics.keys()
    assert (metrics["model"], metrics["data"], metrics["seed"], metrics["epochs"]) == (
        "nettoy1d_dilated",
        "toy",
        3,
        1,
    )


def test_checkpoint_round_trip_gives_identical_logits(toy_run, toy):
    out, metrics = toy_run
    model, config = train.load_checkpoint(out)
    assert config == {"model": "nettoy1d_dilated", "nb_classes": 32, "grid": [32], "data": "toy"}
    again, _ = train.load_checkpoint(out / "checkpoint.pt", expected_model="nettoy1d_dilated")
    x = data.to_model_input(toy.test[:8])
    with torch.no_grad():
        assert torch.equal(model(x), again(x))
    assert train.nll_nats(model, toy.test) == pytest.approx(metrics["test_nll_nats"])
    assert model.normalize.std.item() == pytest.approx(toy.std)


def test_checkpoints_are_plain_data(toy_run):
    out, _ = toy_run
    raw = torch.load(out / "checkpoint.pt", weights_only=True)
    assert set(raw) == {"config", "state_dict"}


def test_checkpoint_of_another_model_is_refused(toy_run):
    out, _ = toy_run
    with pytest.raises(train.CheckpointError, match="'nettoy1d_dilated' model, not 'wavenet'"):
        train.load_checkpoint(out, expected_model="wavenet")


@pytest.mark.parametrize(
    "change, message",
    [
        ({"nb_classes": 17}, "does not fit a 'nettoy1d_dilated' model with nb_classes=17"),
        ({"model": "pixelcnn", "grid": [8, 8]}, "does not fit a 'pixelcnn' model"),
        ({"model": "nope"}, "unknown model 'nope'"),
    ],
)
def test_checkpoint_whose_weights_do_not_fit_its_config_is_refused(
    toy_run, tmp_path, change, message
):
    out, _ = toy_run
    raw = torch.load(out / "checkpoint.pt", weights_only=True)
    raw["config"].update(change)
    torch.save(raw, tmp_path / "bad.pt")
    with pytest.raises(train.CheckpointError, match=message) as error:
        train.load_checkpoint(tmp_path / "bad.pt")
    assert "\n" not in str(error.value)


def test_missing_or_foreign_checkpoint_files(tmp_path):
    with pytest.raises(train.CheckpointError, match="not found"):
        train.load_checkpoint(tmp_path)  # a directory without checkpoint.pt
    (tmp_path / "text.pt").write_text("hello")
    with pytest.raises(train.CheckpointError, match="not a readable checkpoint"):
        train.load_checkpoint(tmp_path / "text.pt")
    torch.save({"weights": torch.zeros(1)}, tmp_path / "other.pt")
    with pytest.raises(train.CheckpointError, match="not a causal checkpoint"):
        train.load_checkpoint(tmp_path / "other.pt")
