"""Samples of several models side by side with test data, as in the lecture's slides 14, 18-20
and 24-25: one column per source (test data first), the same number of items in each."""

import math
from pathlib import Path

import torch


def side_by_side(columns: dict, path, nb_classes: int, title: str | None = None) -> None:
    """Writes a PNG with one column per ``name -> samples (N, *grid)``: line plots stacked in
    rows for sequences, one mosaic of images for 2D samples."""
    import matplotlib

    matplotlib.use("Agg")  # no display needed; set before pyplot is imported
    import matplotlib.pyplot as plt

    first = next(iter(columns.values()))
    if first.dim() == 2:
        fig = _sequences(plt, columns, nb_classes)
    else:
        fig = _mosaics(plt, columns, nb_classes)
    if title:
        fig.suptitle(title, fontsize=10)
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(Path(path), dpi=80)
    plt.close(fig)


def _sequences(plt, columns, nb_classes):
    rows = min(len(s) for s in columns.values())
    fig, axes = plt.subplots(
        rows, len(columns), figsize=(2.6 * len(columns), 0.9 * rows + 0.6), squeeze=False
    )
    for col, (name, samples) in enumerate(columns.items()):
        axes[0, col].set_title(name, fontsize=9)
        for row in range(rows):
            ax = axes[row, col]
            ax.plot(samples[row].cpu().numpy(), linewidth=1)
            ax.set_ylim(-0.5, nb_classes - 0.5)
            ax.set_xticks([])
            ax.set_yticks([])
    fig.subplots_adjust(left=0.01, right=0.99, bottom=0.01, top=0.9, wspace=0.05, hspace=0.08)
    return fig


def mosaic(images: torch.Tensor, gap_value: float) -> torch.Tensor:
    """``(N, H, W)`` -> one ``(rows*(H+1)-1, cols*(W+1)-1)`` image, a one-pixel gap between."""
    n, h, w = images.shape
    cols = math.ceil(math.sqrt(n))
    rows = math.ceil(n / cols)
    out = torch.full((rows * (h + 1) - 1, cols * (w + 1) - 1), float(gap_value))
    for i, image in enumerate(images):
        r, c = divmod(i, cols)
        out[r * (h + 1) : r * (h + 1) + h, c * (w + 1) : c * (w + 1) + w] = image.float()
    return out


def _mosaics(plt, columns, nb_classes):
    fig, axes = plt.subplots(1, len(columns), figsize=(2.2 * len(columns), 2.5), squeeze=False)
    for ax, (name, samples) in zip(axes[0], columns.items(), strict=True):
        # light-gray gaps: visible against the white background, unlike any stroke
        gap = 0.25 * (nb_classes - 1)
        ax.imshow(mosaic(samples.cpu(), gap), cmap="gray_r", vmin=0, vmax=nb_classes - 1)
        ax.set_title(name, fontsize=9)
        ax.axis("off")
    fig.subplots_adjust(left=0.01, right=0.99, bottom=0.01, top=0.85, wspace=0.05)
    return fig
