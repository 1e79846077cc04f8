"""causal/data.py: toy sequences, the digits split, the IDX reader and MNIST loading."""

import gzip
import struct

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from causal import data

# ---------------------------------------------------------------------------------------------
# Toy sequences


@given(seed=st.integers(0, 2**16), nb=st.integers(1, 20), length=st.integers(32, 64))
def test_toy_sequences_are_seeded_shaped_and_in_range(seed, nb, length):
    def make(s):
        return data.toy_sequences(nb, length, 32, generator=torch.Generator().manual_seed(s))

    x = make(seed)
    assert x.shape == (nb, length) and x.dtype == torch.long
    assert x.min() >= 0 and x.max() <= 31
    assert torch.equal(x, make(seed))


def test_toy_sequences_depend_on_the_seed_and_use_many_levels():
    a = data.toy_sequences(200, generator=torch.Generator().manual_seed(0))
    b = data.toy_sequences(200, generator=torch.Generator().manual_seed(1))
    assert not torch.equal(a, b)
    assert a.unique().numel() >= 25  # quantized to a few dozen levels, not a handful


def test_toy_dataset_split_is_fixed_and_disjoint():
    d = data.load("toy")
    assert (d.name, d.nb_classes, d.grid, d.dims) == ("toy", 32, (64,), 1)
    assert [len(d.train), len(d.val), len(d.test)] == [4000, 500, 500]
    assert torch.equal(d.train, data.load("toy").train)
    assert not torch.equal(d.val[:10], d.test[:10])
    assert d.mean == pytest.approx(d.train.double().mean().item())
    assert d.std == pytest.approx(d.train.double().std().item())


def test_to_model_input_adds_the_channel_dimension():
    x = torch.arange(6).view(2, 3)
    y = data.to_model_input(x, torch.float64)
    assert y.shape == (2, 1, 3) and y.dtype == torch.float64
    assert torch.equal(y[:, 0], x.double())


# ---------------------------------------------------------------------------------------------
# Digits


@pytest.fixture(scope="module")
def digits():
    return data.load("digits")


def test_digits_split_sizes_and_levels(digits):
    assert (digits.grid, digits.nb_classes) == ((8, 8), 17)
    assert [len(digits.train), len(digits.val), len(digits.test)] == [1000, 350, 447]
    assert digits.train.dtype == torch.long
    assert digits.train.unique().tolist() == list(range(17))


def test_digits_splits_partition_the_1797_images(digits):
    from sklearn.datasets import load_digits

    every = torch.cat([digits.train, digits.val, digits.test]).reshape(-1, 64)
    original = torch.from_numpy(load_digits().images).long().reshape(-1, 64)
    assert every.shape == original.shape
    assert torch.equal(every.unique(dim=0), original.unique(dim=0))


def test_digits_split_does_not_depend_on_anything_but_the_split_seed(digits):
    assert torch.equal(data.load_digits().test, digits.test)
    assert not torch.equal(data.load_digits(split_seed=1).test, digits.test)


# ---------------------------------------------------------------------------------------------
# IDX files

CODES = {np.dtype("u1"): 8, np.dtype("i1"): 9, np.dtype(">i2"): 11, np.dtype(">i4"): 12}
CODES |= {np.dtype(">f4"): 13, np.dtype(">f8"): 14}


def idx_bytes(array: np.ndarray) -> bytes:
    """The IDX encoding of ``array``, written independently of the reader."""
    dtype = array.dtype.newbyteorder(">") if array.dtype.itemsize > 1 else array.dtype
    header = bytes([0, 0, CODES[dtype], array.ndim])
    header += b"".join(struct.pack(">I", n) for n in array.shape)
    return header + array.astype(dtype).tobytes()


def write_idx(path, array, gz=False):
    raw = idx_bytes(array)
    path.write_bytes(gzip.compress(raw) if gz else raw)
    return path


@settings(suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    shape=st.lists(st.integers(0, 5), min_size=1, max_size=3),
    dtype=st.sampled_from(list(CODES)),
    gz=st.booleans(),
    seed=st.integers(0, 2**16),
)
def test_read_idx_round_trip(tmp_path, shape, dtype, gz, seed):
    rng = np.random.default_rng(seed)
    array = (rng.normal(size=shape) * 50).astype(dtype)
    path = write_idx(tmp_path / ("x.idx.gz" if gz else "x.idx"), array, gz=gz)
    back = data.read_idx(path)
    assert back.shape == array.shape
    np.testing.assert_array_equal(back, array)


def test_read_idx_missing_file(tmp_path):
    with pytest.raises(data.DataError, match="not found"):
        data.read_idx(tmp_path / "nothing")


@pytest.mark.parametrize(
    "raw, message",
    [
        (b"\x00\x00", "truncated.*header alone"),
        (b"\x01\x00\x08\x01" + b"\x00" * 8, "bad magic number 0x01000801"),
        (b"\x00\x00\x07\x01" + b"\x00" * 8, "bad magic number"),  # unknown type code
        (b"\x00\x00\x08\x03\x00\x00\x00\x02", "truncated.*header needs 16"),
        (idx_bytes(np.zeros((3, 4), "u1"))[:-1], "truncated: 23 bytes.*needs 24"),
        (idx_bytes(np.zeros((3, 4), ">i4"))[:-4], "truncated"),
        (idx_bytes(np.zeros(3, "u1")) + b"\x00", "longer than its header says"),
    ],
    ids=["short-header", "bad-magic", "bad-type", "short-dims", "short-data", "short-i4", "long"],
)
def test_read_idx_errors(tmp_path, raw, message):
    """Each way a file can be broken gets its own message, never garbage or a numpy error."""
    path = tmp_path / "bad"
    path.write_bytes(raw)
    with pytest.raises(data.DataError, match=message):
        data.read_idx(path)


def test_read_idx_bad_gzip(tmp_path):
    path = tmp_path / "bad.gz"
    path.write_bytes(b"not gzip at all")
    with pytest.raises(data.DataError, match="cannot read"):
        data.read_idx(path)


def test_read_idx_truncated_gzip(tmp_path):
    path = tmp_path / "short.gz"
    path.write_bytes(gzip.compress(idx_bytes(np.zeros((2, 28, 28), "u1")))[:-10])
    with pytest.raises(data.DataError, match="cannot read"):
        data.read_idx(path)


# ---------------------------------------------------------------------------------------------
# MNIST from local files


def fake_mnist(directory, nb_train=12, nb_test=5, gz=False, size=(28, 28)):
    rng = np.random.default_rng(0)
    suffix = ".gz" if gz else ""
    directory.mkdir(exist_ok=True)
    for stem, n in [("train-images-idx3-ubyte", nb_train), ("t10k-images-idx3-ubyte", nb_test)]:
        images = rng.integers(0, 256, size=(n, *size), dtype=np.uint8)
        write_idx(directory / f"{stem}{suffix}", images, gz=gz)
    return directory


@pytest.mark.parametrize("gz", [False, True])
def test_load_mnist_from_idx_files(tmp_path, gz):
    d = data.load("mnist", mnist_dir=fake_mnist(tmp_path / "mnist", gz=gz))
    assert (d.nb_classes, d.grid) == (256, (28, 28))
    assert [len(d.train), len(d.val), len(d.test)] == [10, 2, 5]  # 1/6 of train held out
    expected = torch.from_numpy(
        data.read_idx(tmp_path / "mnist" / f"t10k-images-idx3-ubyte{'.gz' if gz else ''}").astype(
            np.int64
        )
    )
    assert torch.equal(d.test, expected)
    assert d.train.dtype == torch.long and 0 <= d.train.min() and d.train.max() <= 255


def test_mnist_missing_directory_says_where_to_get_the_files(tmp_path):
    with pytest.raises(
        data.DataError, match="does not exist.*train-images-idx3-ubyte.*--mnist-dir"
    ):
        data.load_mnist(tmp_path / "nowhere")


def test_mnist_missing_file_is_named(tmp_path):
    directory = fake_mnist(tmp_path / "mnist")
    (directory / "t10k-images-idx3-ubyte").unlink()
    with pytest.raises(
        data.DataError, match=r"t10k-images-idx3-ubyte \(or t10k-images-idx3-ubyte.gz\) not found"
    ):
        data.load_mnist(directory)


def test_mnist_without_a_directory(tmp_path):
    with pytest.raises(data.DataError, match="--mnist-dir"):
        data.load("mnist")


def test_mnist_rejects_non_image_files_and_mismatched_sizes(tmp_path):
    directory = fake_mnist(tmp_path / "mnist")
    write_idx(directory / "t10k-images-idx3-ubyte", np.zeros((3, 4), "u1"))
    with pytest.raises(data.DataError, match="2-dim uint8.*3-dim uint8"):
        data.load_mnist(directory)
    write_idx(directory / "t10k-images-idx3-ubyte", np.zeros((3, 8, 8), "u1"))
    with pytest.raises(data.DataError, match="do not belong together"):
        data.load_mnist(directory)


def test_unknown_data_lists_the_known_ones():
    with pytest.raises(data.DataError, match="toy, digits, mnist"):
        data.load("cifar")
