"""What the adapters cost, measured side by side in one run.

    python -m benchmarks.bench_adapters      # from the repository root

- One batch size: the audit of PixelCNN++-style cached padding (every pass at batch 2, in
  slices) against the same model with its cache emptied before every call (any batch size, so
  the audit stacks its passes as usual): same verdict, and the ratio of wall times.
- Forward hook: the nanoGPT-style model through ``forward=`` against a wrapper module doing the
  same call: the hook should cost nothing.
- Sub-pixel order: a colour PixelCNN audited per pixel and per (pixel, channel) (3x the
  positions).

Each line prints both wall times (best of ``--repeat``) and their ratio.
"""

import argparse
import sys
import time
from pathlib import Path

import torch

import properties

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests" / "targets"))

import as_they_come as come  # noqa: E402
import colour_pixelcnn as colour  # noqa: E402


class Uncached(come.CachedPadding):
    """The cached-padding model, its cache emptied before each call: runs at any batch size."""

    def forward(self, x):
        self.init_padding = None
        return super().forward(x)


class Wrapped(torch.nn.Module):
    """The wrapper class a user writes without the hook."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, x):
        return self.model(x, targets=x)[0]


def best(repeat: int, build, **options):
    seconds, result = [], None
    for _ in range(repeat):
        start = time.perf_counter()
        result = properties.audit_model(build(), **options)
        seconds.append(time.perf_counter() - start)
    return min(seconds), result


def line(what: str, a: tuple, b: tuple, labels: tuple[str, str]) -> None:
    (ta, ra), (tb, rb) = a, b
    print(
        f"{what:34} {labels[0]} {ta:6.2f} s ({ra.mode})  {labels[1]} {tb:6.2f} s ({rb.mode})  "
        f"ratio {tb / ta:5.2f}",
        flush=True,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(1)
    r = args.repeat
    image = dict(grid=(8, 8), layout="BCHW", predicts="current", max_examples=25)
    line(
        "cached padding, 8x8",
        best(r, Uncached, **image),
        best(r, come.CachedPadding, **image),
        ("any batch", "batch 2 only"),
    )
    tokens = dict(grid=(32,), vocab=come.VOCAB, layout="BT", predicts="next", max_examples=25)
    line(
        "nanoGPT-style, 32 tokens",
        best(r, lambda: Wrapped(come.LastOnlyGPT()), **tokens),
        best(r, come.LastOnlyGPT, forward=come.all_logits, **tokens),
        ("wrapper", "forward="),
    )
    pixels = dict(grid=(6, 6), features=3, predicts="current", max_examples=25)
    line(
        "colour PixelCNN, 6x6",
        best(r, colour.colour, **pixels),
        best(r, colour.colour, order="raster+channels", layout="BCHW->B(SC)HW", **pixels),
        ("per pixel", "sub-pixel"),
    )


if __name__ == "__main__":
    main()
