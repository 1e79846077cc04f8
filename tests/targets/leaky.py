"""Small models for the CLI tests: targets given as path/to/file.py:attr."""

from properties.extra.architectures import Architecture


def causal():
    return Architecture(1, (2, 2), (1, 2), seed=1).build()


def no_shift():
    return Architecture(1, (2, 2), (1, 2), bug="no_shift").build()


def same_padding():
    return Architecture(1, (2, 5), (1, 1), bug="same_padding").build()


def batchnorm_over_time():
    return Architecture(1, (2, 2), (1, 2), bug="batchnorm_over_time").build()


masked_2d = Architecture(2, (3, 3), (1, 1), style="masked").build()
