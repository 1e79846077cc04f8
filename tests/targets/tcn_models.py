"""pytorch-tcn's TCN in its variants, small (2 blocks of kernel 3, dilations 1 and 2: a
receptive field of 1 + 2 * (2 * 1 + 2 * 2) = 13 positions).

Its input is ``(N, C, L)`` (``input_shape='NCL'``, the default: ``--layout BCT``) or ``(N, L, C)``
(``'NLC'``: ``--layout BTC``); the output has the input's layout.
"""

import warnings

import torch
from pytorch_tcn import TCN

FEATURES = 2


def _tcn(**options) -> TCN:
    torch.manual_seed(0)
    with warnings.catch_warnings():  # pytorch-tcn warns about its own defaults
        warnings.simplefilter("ignore")
        return TCN(FEATURES, [8, 8], kernel_size=3, **options)


def tcn_causal() -> TCN:
    return _tcn(causal=True)


def tcn_noncausal() -> TCN:
    return _tcn(causal=False)


def tcn_nlc() -> TCN:
    return _tcn(causal=True, input_shape="NLC")


def tcn_dropout() -> TCN:
    return _tcn(causal=True, dropout=0.5)


def tcn_batchnorm() -> TCN:
    return _tcn(causal=True, use_norm="batch_norm")


def tcn_layernorm() -> TCN:
    return _tcn(causal=True, use_norm="layer_norm")
