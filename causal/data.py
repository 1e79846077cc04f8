"""The data the models are trained on: the lecture's toy 1D sequences, scikit-learn's 8x8 digits,
and MNIST read from local IDX files.

Every data set is a :class:`Dataset`: three ``LongTensor`` splits of shape ``(N, *grid)`` holding
class levels ``0 .. nb_classes - 1``, plus the mean and std of the training split, which training
writes into the model's :class:`~causal.layers.Normalize` buffers.

Splits are fixed by ``split_seed`` (default 0), *not* by the training seed: runs with different
training seeds are evaluated on the same held-out images, so their numbers compare.

Nothing is downloaded, ever. MNIST must be on disk already (``train-images-idx3-ubyte`` and
``t10k-images-idx3-ubyte``, optionally gzipped); :func:`read_idx` reads the IDX format itself
(magic number ``0 0 dtype ndim``, ``ndim`` big-endian uint32 sizes, then big-endian data) and
says what is wrong with a file rather than returning garbage.
"""

import gzip
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

MNIST_URL = "https://yann.lecun.com/exdb/mnist/"
MNIST_FILES = {"train": "train-images-idx3-ubyte", "test": "t10k-images-idx3-ubyte"}

# IDX type codes -> numpy dtypes (big-endian where it matters).
IDX_DTYPES = {
    0x08: np.dtype("u1"),
    0x09: np.dtype("i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}


class DataError(ValueError):
    """A data set cannot be loaded; the message says what is missing or wrong, in one line."""


@dataclass(frozen=True)
class Dataset:
    name: str
    train: torch.Tensor  # (N_train, *grid) long, levels 0 .. nb_classes - 1
    val: torch.Tensor  # (N_val, *grid)
    test: torch.Tensor  # (N_test, *grid)
    nb_classes: int
    grid: tuple[int, ...]
    mean: float  # of the training split's raw levels, for the model's Normalize
    std: float

    @property
    def dims(self) -> int:
        return len(self.grid)


def make_dataset(name, train, val, test, nb_classes) -> Dataset:
    """Wraps three long tensors, computing the statistics from the training split only."""
    values = train.double()
    return Dataset(
        name=name,
        train=train,
        val=val,
        test=test,
        nb_classes=int(nb_classes),
        grid=tuple(train.shape[1:]),
        mean=values.mean().item(),
        std=values.std().item(),
    )


def to_model_input(x: torch.Tensor, dtype=torch.float32) -> torch.Tensor:
    """Class levels ``(B, *grid)`` -> the raw float input every model takes, ``(B, 1, *grid)``."""
    return x.unsqueeze(1).to(dtype)


def split(x: torch.Tensor, sizes, seed: int = 0):
    """A seeded permutation of ``x`` cut into consecutive pieces of the given sizes."""
    if sum(sizes) > x.size(0):
        raise DataError(f"cannot split {x.size(0)} items into {list(sizes)}")
    order = torch.randperm(x.size(0), generator=torch.Generator().manual_seed(seed))
    pieces, start = [], 0
    for size in sizes:
        pieces.append(x[order[start : start + size]])
        start += size
    return pieces


# ---------------------------------------------------------------------------------------------
# Toy 1D sequences (lecture slide 9)


def _piece(u: torch.Tensor, kind: torch.Tensor) -> torch.Tensor:
    """Unit-height shapes on ``u in [0, 1)`` (zero outside): box, triangle, ramp up, ramp down."""
    inside = ((u >= 0) & (u < 1)).float()
    shapes = torch.stack([torch.ones_like(u), 1 - (2 * u - 1).abs(), u, 1 - u])  # (4, N, T)
    return shapes.gather(0, kind.expand_as(u)[None])[0] * inside


def toy_sequences(nb, length=64, nb_classes=32, *, generator, nb_pieces=3) -> torch.Tensor:
    """``(nb, length)`` levels: sums of up to ``nb_pieces`` boxes, triangles and linear ramps.

    Each piece starts anywhere, spans 1/8 to 1/2 of the sequence, has a height in [0.2, 0.6] and
    is present with probability 3/4; the sum is clipped to [0, 1] and quantized to
    ``nb_classes`` levels. Local shapes plus long flat stretches: what a short receptive field
    cannot capture and a dilated one can (lecture slides 13-16).
    """

    def uniform(low, high):
        return low + (high - low) * torch.rand(nb, 1, generator=generator)

    t = torch.arange(length, dtype=torch.float32)  # (T,)
    x = torch.zeros(nb, length)
    for _ in range(nb_pieces):
        start = uniform(-length / 8, length)
        width = uniform(length / 8, length / 2)
        height = uniform(0.2, 0.6) * (torch.rand(nb, 1, generator=generator) < 0.75)
        kind = torch.randint(4, (nb, 1), generator=generator)
        x += height * _piece((t - start) / width, kind)  # (N, T)
    return (x.clamp(0, 1) * (nb_classes - 1)).round().long()


def load_toy(length=64, nb_classes=32, sizes=(4000, 500, 500), split_seed=0) -> Dataset:
    """The toy sequences, generated from ``split_seed`` and cut into train/val/test."""
    if length < 2:
        raise DataError(f"toy sequences need a length of at least 2, got {length}")
    generator = torch.Generator().manual_seed(split_seed)
    x = toy_sequences(sum(sizes), length, nb_classes, generator=generator)
    n_train, n_val, _ = sizes
    return make_dataset(
        "toy", x[:n_train], x[n_train : n_train + n_val], x[n_train + n_val :], nb_classes
    )


# ---------------------------------------------------------------------------------------------
# scikit-learn's 8x8 digits


def load_digits(split_seed=0, sizes=(1000, 350, 447)) -> Dataset:
    """The 1797 bundled 8x8 digits, 17 gray levels 0..16, split 1000 / 350 / 447."""
    try:
        from sklearn.datasets import load_digits as sklearn_digits
    except ImportError as error:  # pragma: no cover - depends on the environment
        message = "the digits need scikit-learn: pip install 'autoregressive-audit[data]'"
        raise DataError(message) from error
    images = torch.from_numpy(sklearn_digits().images).round().long()  # (1797, 8, 8)
    return make_dataset("digits", *split(images, sizes, split_seed), nb_classes=17)


def load_digit_labels(split_seed=0, sizes=(1000, 350, 447)) -> tuple[torch.Tensor, ...]:
    """The digits' labels 0..9, split exactly as :func:`load_digits` splits the images."""
    from sklearn.datasets import load_digits as sklearn_digits

    labels = torch.from_numpy(sklearn_digits().target).long()  # (1797,)
    return tuple(split(labels, sizes, split_seed))


# ---------------------------------------------------------------------------------------------
# IDX files and MNIST


def _open_bytes(path: Path) -> bytes:
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:
            return f.read()
    except (OSError, EOFError) as error:  # gzip.BadGzipFile is an OSError
        raise DataError(f"cannot read IDX file {path}: {error}") from error


def parse_idx(data: bytes, name: str = "IDX data") -> np.ndarray:
    """The array an IDX byte string holds; :class:`DataError` on any inconsistency."""
    if len(data) < 4:
        raise DataError(f"{name} is truncated: {len(data)} bytes, the header alone needs 4")
    zero0, zero1, code, ndim = data[:4]
    if zero0 or zero1 or code not in IDX_DTYPES:
        raise DataError(
            f"{name} is not an IDX file: bad magic number 0x{data[:4].hex()} "
            f"(expected 0x0000 then a type code in {sorted(IDX_DTYPES)} and the number of dims)"
        )
    header = 4 + 4 * ndim
    if len(data) < header:
        raise DataError(f"{name} is truncated: {len(data)} bytes, its header needs {header}")
    shape = tuple(int(n) for n in np.frombuffer(data, ">u4", count=ndim, offset=4))
    dtype = IDX_DTYPES[code]
    expected = header + math.prod(shape) * dtype.itemsize
    if len(data) != expected:
        what = "truncated" if len(data) < expected else "longer than its header says"
        raise DataError(
            f"{name} is {what}: {len(data)} bytes, shape {shape} of {dtype.name} needs {expected}"
        )
    return np.frombuffer(data, dtype, offset=header).reshape(shape)


def read_idx(path) -> np.ndarray:
    """Reads an IDX file (``.gz`` is decompressed), e.g. MNIST's ``train-images-idx3-ubyte``."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"IDX file not found: {path}")
    return parse_idx(_open_bytes(path), name=str(path))


def find_mnist_file(directory, stem: str) -> Path:
    """`directory/stem` or `directory/stem.gz`, else a DataError that says where to get it."""
    directory = Path(directory)
    hint = f"download {stem}.gz from {MNIST_URL} (or a mirror) and pass its folder with --mnist-dir"
    if not directory.is_dir():
        raise DataError(f"MNIST directory {directory} does not exist; {hint}")
    for candidate in (directory / stem, directory / f"{stem}.gz"):
        if candidate.is_file():
            return candidate
    raise DataError(f"MNIST file {stem} (or {stem}.gz) not found in {directory}; {hint}")


def read_mnist_images(directory, stem: str) -> torch.Tensor:
    """``(N, H, W)`` uint8 images of one MNIST file, as a long tensor."""
    path = find_mnist_file(directory, stem)
    images = read_idx(path)
    if images.ndim != 3 or images.dtype != np.uint8:
        raise DataError(
            f"{path} holds {images.ndim}-dim {images.dtype} data; MNIST images are 3-dim uint8"
        )
    return torch.from_numpy(images.astype(np.int64))


def load_mnist(directory, split_seed=0) -> Dataset:
    """MNIST with 256 gray levels: 1/6 of the training file held out for validation
    (10000 of 60000), the ``t10k`` file as the test split."""
    train_all = read_mnist_images(directory, MNIST_FILES["train"])
    test = read_mnist_images(directory, MNIST_FILES["test"])
    if train_all.shape[1:] != test.shape[1:]:
        raise DataError(
            f"MNIST train images are {tuple(train_all.shape[1:])}, test images "
            f"{tuple(test.shape[1:])}: the two files do not belong together"
        )
    n_val = train_all.size(0) // 6
    val, train = split(train_all, (n_val, train_all.size(0) - n_val), split_seed)
    return make_dataset("mnist", train, val, test, nb_classes=256)


# ---------------------------------------------------------------------------------------------

DATASETS = ("toy", "digits", "mnist")


def load(name: str, *, mnist_dir=None, split_seed=0) -> Dataset:
    """A data set by name (one of :data:`DATASETS`)."""
    if name == "toy":
        return load_toy(split_seed=split_seed)
    if name == "digits":
        return load_digits(split_seed=split_seed)
    if name == "mnist":
        if mnist_dir is None:
            raise DataError(
                f"--data mnist needs --mnist-dir DIR holding {MNIST_FILES['train']} and "
                f"{MNIST_FILES['test']} (optionally .gz), from {MNIST_URL}"
            )
        return load_mnist(mnist_dir, split_seed=split_seed)
    raise DataError(f"unknown data {name!r}; known data: {', '.join(DATASETS)}")
