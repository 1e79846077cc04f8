"""``python -m causal``: train and sample end to end, and one-line errors (exit 2) on bad input."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from causal.cli import main


def run_cli(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def assert_usage_error(code, err, *fragments):
    assert code == 2
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


@pytest.fixture(scope="module")
def toy_run(tmp_path_factory):
    """One short training run through the CLI (large batches: 16 steps), shared by the tests."""
    out = tmp_path_factory.mktemp("cli") / "run"
    argv = ["train", "--model", "nettoy1d", "--data", "toy", "--epochs", "1", "--batch-size", "256"]
    code = main([*argv, "--out", str(out)])
    assert code == 0
    return out


def test_train_writes_metrics_checkpoint_and_pictures(toy_run):
    metrics = json.loads((toy_run / "metrics.json").read_text())
    assert metrics["model"] == "nettoy1d" and metrics["data"] == "toy" and metrics["epochs"] == 1
    assert 0 < metrics["test_nll_nats"] < metrics["uniform_nll_nats"]
    assert (toy_run / "checkpoint.pt").is_file()
    assert (toy_run / "samples.png").read_bytes()[:4] == b"\x89PNG"


def test_sample_from_a_checkpoint_is_reproducible(toy_run, tmp_path, capsys):
    for name in ("a.pt", "b.pt"):
        code, _, _ = run_cli(
            capsys,
            "sample",
            "--checkpoint",
            toy_run,
            "--n",
            3,
            "--seed",
            7,
            "--out",
            tmp_path / name,
        )
        assert code == 0
    a, b = torch.load(tmp_path / "a.pt"), torch.load(tmp_path / "b.pt")
    assert a.dtype == torch.long and a.shape == (3, 64)
    assert torch.equal(a, b)
    assert a.min() >= 0 and a.max() < 32


def test_sample_checks_the_checkpoint_against_the_model_name(toy_run, tmp_path, capsys):
    code, _, _ = run_cli(
        capsys,
        "sample",
        "--checkpoint",
        toy_run,
        "--model",
        "nettoy1d",
        "--n",
        2,
        "--length",
        20,
        "--seed",
        0,
        "--out",
        tmp_path / "s.pt",
    )
    assert code == 0
    assert torch.load(tmp_path / "s.pt").shape == (2, 20)
    code, _, err = run_cli(
        capsys,
        "sample",
        "--checkpoint",
        toy_run,
        "--model",
        "wavenet",
        "--n",
        2,
        "--seed",
        0,
        "--out",
        tmp_path / "s.pt",
    )
    assert_usage_error(code, err, "'nettoy1d' model, not 'wavenet'")


def test_sample_an_untrained_model(tmp_path, capsys):
    outputs = []
    for seed in (0, 0, 1):
        path = tmp_path / f"s{len(outputs)}.pt"
        code, _, _ = run_cli(
            capsys,
            "sample",
            "--model",
            "pixelcnn",
            "--n",
            2,
            "--shape",
            6,
            7,
            "--seed",
            seed,
            "--dtype",
            "float64",
            "--out",
            path,
        )
        assert code == 0
        outputs.append(torch.load(path))
    assert outputs[0].shape == (2, 6, 7)
    assert torch.equal(outputs[0], outputs[1]) and not torch.equal(outputs[0], outputs[2])


def test_sample_writes_a_png(tmp_path, capsys):
    path = tmp_path / "digits.png"
    code, _, _ = run_cli(
        capsys,
        "sample",
        "--model",
        "pixelcnn_gated",
        "--n",
        4,
        "--shape",
        8,
        8,
        "--seed",
        0,
        "--out",
        path,
    )
    assert code == 0 and path.read_bytes()[:4] == b"\x89PNG"


# ---------------------------------------------------------------------------------------------
# Bad input: one line on stderr, exit 2, no traceback


@pytest.mark.parametrize(
    "argv, fragments",
    [
        (
            ["train", "--model", "nope", "--data", "toy", "--out", "{tmp}/x"],
            ["unknown model 'nope'", "pixelcnn_gated"],
        ),
        (
            ["train", "--model", "pixelcnn", "--data", "cifar", "--out", "{tmp}/x"],
            ["invalid choice: 'cifar'", "'toy', 'digits', 'mnist'"],
        ),
        (
            [
                "train",
                "--model",
                "pixelcnn",
                "--data",
                "mnist",
                "--mnist-dir",
                "{tmp}/none",
                "--out",
                "{tmp}/x",
            ],
            ["train-images-idx3-ubyte", "--mnist-dir"],
        ),
        (["train", "--model", "pixelcnn", "--data", "mnist", "--out", "{tmp}/x"], ["--mnist-dir"]),
        (
            ["train", "--model", "nettoy1d", "--data", "digits", "--out", "{tmp}/x"],
            ["nettoy1d is 1-D", "digits is 2-D"],
        ),
        (
            [
                "train",
                "--model",
                "pixelcnn",
                "--data",
                "toy",
                "--epochs",
                "2",
                "--minutes",
                "1",
                "--out",
                "{tmp}/x",
            ],
            ["not allowed with argument"],
        ),
        (
            ["train", "--model", "pixelcnn", "--data", "toy", "--epochs", "0", "--out", "{tmp}/x"],
            ["must be positive"],
        ),
        (
            ["sample", "--model", "nope", "--n", "2", "--seed", "0", "--out", "{tmp}/s.pt"],
            ["unknown model 'nope'", "nettoy1d"],
        ),
        (
            [
                "sample",
                "--model",
                "nettoy1d",
                "--n",
                "2",
                "--length",
                "1",
                "--seed",
                "0",
                "--out",
                "{tmp}/s.pt",
            ],
            ["too small"],
        ),
        (
            [
                "sample",
                "--model",
                "nettoy1d",
                "--n",
                "2",
                "--shape",
                "8",
                "8",
                "--seed",
                "0",
                "--out",
                "{tmp}/s.pt",
            ],
            ["works on sequences"],
        ),
        (
            [
                "sample",
                "--model",
                "pixelcnn",
                "--n",
                "2",
                "--length",
                "8",
                "--seed",
                "0",
                "--out",
                "{tmp}/s.pt",
            ],
            ["works on images"],
        ),
        (
            [
                "sample",
                "--model",
                "pixelcnn_pe",
                "--n",
                "2",
                "--shape",
                "8",
                "8",
                "--seed",
                "0",
                "--out",
                "{tmp}/s.pt",
            ],
            ["(8, 8)", "built for grid (28, 28)"],
        ),
        (
            ["sample", "--model", "pixelcnn", "--n", "2", "--seed", "0", "--out", "{tmp}/s.txt"],
            [".pt or .png"],
        ),
        (
            ["sample", "--n", "2", "--seed", "0", "--out", "{tmp}/s.pt"],
            ["--model NAME or --checkpoint DIR"],
        ),
        (
            ["sample", "--checkpoint", "{tmp}", "--n", "2", "--seed", "0", "--out", "{tmp}/s.pt"],
            ["checkpoint not found"],
        ),
        (
            [
                "sample",
                "--model",
                "pixelcnn",
                "--n",
                "2",
                "--seed",
                "0",
                "--dtype",
                "float16",
                "--out",
                "{tmp}/s.pt",
            ],
            ["invalid choice: 'float16'"],
        ),
    ],
)
def test_bad_input_is_one_line_and_exit_2(tmp_path, capsys, argv, fragments):
    argv = [a.replace("{tmp}", str(tmp_path)) for a in argv]
    code, out, err = run_cli(capsys, *argv)
    assert_usage_error(code, err, *fragments)
    assert not (tmp_path / "s.pt").exists()


def test_train_out_must_not_be_a_file(tmp_path, capsys):
    (tmp_path / "file").write_text("")
    code, _, err = run_cli(
        capsys, "train", "--model", "nettoy1d", "--data", "toy", "--out", tmp_path / "file"
    )
    assert_usage_error(code, err, "is a file")


def test_missing_mnist_file_is_named(tmp_path, capsys):
    (tmp_path / "mnist").mkdir()
    header = bytes([0, 0, 8, 3]) + b"".join(n.to_bytes(4, "big") for n in (2, 28, 28))
    (tmp_path / "mnist" / "train-images-idx3-ubyte").write_bytes(header + bytes(2 * 784))
    code, _, err = run_cli(
        capsys,
        "train",
        "--model",
        "pixelcnn",
        "--data",
        "mnist",
        "--mnist-dir",
        tmp_path / "mnist",
        "--out",
        tmp_path / "x",
    )
    assert_usage_error(code, err, "t10k-images-idx3-ubyte", "--mnist-dir")


def test_checkpoint_whose_weights_do_not_fit_is_refused(toy_run, tmp_path, capsys):
    raw = torch.load(toy_run / "checkpoint.pt", weights_only=True)
    raw["config"]["nb_classes"] = 7
    torch.save(raw, tmp_path / "bad.pt")
    code, _, err = run_cli(
        capsys,
        "sample",
        "--checkpoint",
        tmp_path / "bad.pt",
        "--n",
        1,
        "--seed",
        0,
        "--out",
        tmp_path / "s.pt",
    )
    assert_usage_error(code, err, "does not fit a 'nettoy1d' model with nb_classes=7")


def test_checkpoint_sampled_at_another_shape_than_trained_for(tmp_path, capsys):
    """A pixelcnn_pe trained on 8x8 images cannot be sampled at 28x28."""
    images = np.random.default_rng(0).integers(0, 17, size=(40, 8, 8))
    from causal import data, train

    x = torch.from_numpy(images)
    dataset = data.make_dataset("digits", x[:20], x[20:30], x[30:], 17)
    train.run(train.TrainConfig("pixelcnn_pe", "digits", epochs=1), dataset, tmp_path, False)
    code, _, err = run_cli(
        capsys,
        "sample",
        "--checkpoint",
        tmp_path,
        "--n",
        1,
        "--shape",
        28,
        28,
        "--seed",
        0,
        "--out",
        tmp_path / "s.pt",
    )
    assert_usage_error(code, err, "built for grid (8, 8)")
    code, _, _ = run_cli(
        capsys,
        "sample",
        "--checkpoint",
        tmp_path,
        "--n",
        1,
        "--seed",
        0,
        "--out",
        tmp_path / "s.pt",
    )
    assert code == 0 and torch.load(tmp_path / "s.pt").shape == (1, 8, 8)


# ---------------------------------------------------------------------------------------------
# The real entry point, in a fresh interpreter


def python_m_causal(*argv):
    env = dict(os.environ, OMP_NUM_THREADS="1")
    return subprocess.run(
        [sys.executable, "-m", "causal", *map(str, argv)],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )


def test_python_m_causal_samples(tmp_path):
    result = python_m_causal(
        "sample", "--model", "nettoy1d_dilated", "--n", 2, "--seed", 3, "--out", tmp_path / "s.pt"
    )
    assert result.returncode == 0, result.stderr
    assert torch.load(tmp_path / "s.pt").shape == (2, 64)


def test_python_m_causal_bad_input_has_no_traceback(tmp_path):
    result = python_m_causal(
        "sample", "--model", "nope", "--n", 2, "--seed", 0, "--out", tmp_path / "s.pt"
    )
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr
    assert "unknown model 'nope'" in result.stderr
