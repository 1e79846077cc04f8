"""The lecture's models; :mod:`causal.registry` names them and states what each declares."""

from .pixelcnn import PixelCNN, PixelCNNWithPositionalEncoding
from .pixelcnn_gated import GatedPixelCNN
from .pixelcnn_masked import MaskedPixelCNN
from .toy1d import NetToy1d, NetToy1dWithDilation
from .wavenet import WaveNet, WaveNetConfig, mu_law_decode, mu_law_encode

__all__ = [
    "GatedPixelCNN",
    "MaskedPixelCNN",
    "NetToy1d",
    "NetToy1dWithDilation",
    "PixelCNN",
    "PixelCNNWithPositionalEncoding",
    "WaveNet",
    "WaveNetConfig",
    "mu_law_decode",
    "mu_law_encode",
]
