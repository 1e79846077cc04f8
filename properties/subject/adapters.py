"""Outputs that are not one prediction per position: what was seen, and what would work.

Models from public repositories often return something else than ``(B, *grid, K)``: only the
last position unless given targets (nanoGPT's ``GPT.forward(idx, targets=None)`` returns
``logits[:, [-1], :]``), batch and time folded into one axis with fewer positions than were given
(a WaveNet without left padding returns ``(B * L, K)``, ``L = T - R + 1``), one axis too many
(a colour PixelCNN's ``(B, K, 3, H, W)`` logits). A layout cannot describe these, so the fix is
a *forward hook* ``(model, x) -> predictions`` (``forward=`` in the API, ``--forward
FILE.py:FN`` on the CLI): two lines instead of a wrapper class. :func:`story` recognises each
pattern from the output's shape and writes the error: what was seen, and the two lines.
"""

import inspect

from properties.errors import AdapterError
from properties.subject.layout import Layout

__all__ = ["HOOK", "story"]

HOOK = "a forward hook (forward= in the API, --forward FILE.py:FN on the CLI)"


def story(shape: tuple[int, ...], batch: int, subject) -> AdapterError | None:
    """The error for an output of ``shape`` (for an input of ``batch`` samples) that matches a
    known pattern, else ``None``."""
    for recognise in (_last_only, _folded, _fewer_positions, _grouped_subpixel, _extra_axes):
        found = recognise(tuple(shape), batch, subject)
        if found is not None:
            return found
    return None


def _last_only(shape, batch, s):
    """``(B, 1, K)`` or ``(B, K)`` for a sequence: the last position's prediction only."""
    grid = s.grid
    if len(grid) != 1 or grid[0] == 1 or not shape or shape[0] != batch:
        return None
    t = grid[0]
    if len(shape) == 3 and shape[1] == 1 and shape[2] != t:
        seen = f"one position of the {t} given"
    elif len(shape) == 2 and shape[1] % t != 0:
        seen = f"one vector per sample, not one prediction per position (of {t})"
    else:
        return None
    call = _targets_call(s.model)
    example = f"return {call}" if call else "return model(x, ...)  # whatever returns them all"
    return AdapterError(
        f"the model's output has shape {shape}: {seen}; it predicts the last position only "
        "(as nanoGPT's GPT.forward does unless given targets), and the audit needs a "
        "prediction at every position",
        f"return every position through {HOOK}: def FN(model, x): {example}",
    )


def _targets_call(model) -> str | None:
    """``model(x, targets=x)[0]`` when the model's forward takes targets (or labels)."""
    try:
        parameters = inspect.signature(getattr(model, "forward", model)).parameters
    except (TypeError, ValueError):
        return None
    for name in ("targets", "labels", "target"):
        if name in parameters:
            return f"model(x, {name}=x)[0]"
    return None


def _folded(shape, batch, s):
    """``(B * L, K)``: batch and positions folded into one axis (L <= T positions)."""
    grid = s.grid
    if len(grid) != 1 or len(shape) != 2 or shape[0] == batch or shape[0] % batch:
        return None
    t, rows = grid[0], shape[0] // batch
    if rows > t:
        return None
    seen = f"batch and positions folded into one axis ({batch} samples x {rows} positions)"
    unfold = "y.reshape(x.shape[0], -1, y.shape[-1])"
    if rows == t:
        return AdapterError(
            f"the model's output has shape {shape}: {seen}",
            f"unfold it in {HOOK}: def FN(model, x): y = model(x); return {unfold} "
            "(batch-major; y.reshape(-1, x.shape[0], y.shape[-1]).transpose(0, 1) if time-major)",
        )
    return AdapterError(
        f"the model's output has shape {shape}: {seen}, {rows} of the {t} positions given: the "
        f"first {t - rows} are missing (a model without left padding, such as a WaveNet that "
        "returns only the positions whose receptive field is full)",
        f"pad the input on the left and unfold in {HOOK}: def FN(model, x): "
        f"y = model(F.pad(x, {_pad(s.layout_in, t - rows)})); return {unfold}",
    )


def _fewer_positions(shape, batch, s):
    """``(B, L, K)`` / ``(B, K, L)`` with ``1 < L < T``: the first positions are missing."""
    grid = s.grid
    if len(grid) != 1 or len(shape) != 3 or shape[0] != batch or grid[0] in shape[1:]:
        return None
    t = grid[0]
    short = [n for n in shape[1:] if 1 < n < t]
    if len(short) > 1:  # positions where the input has them (BCT -> BCT), if there
        same = shape[_time_axis(s.layout_in)] if len(s.layout_in.groups) == 3 else None
        short = [same] if same in short else short
    if len(short) != 1:
        return None
    missing = t - short[0]
    return AdapterError(
        f"the model's output has shape {shape}: {short[0]} of the {t} positions given (the "
        f"first {missing} missing: a model without left padding, which returns only the "
        "positions whose receptive field is full?)",
        f"pad the input on the left in {HOOK}: def FN(model, x): "
        f"return model(F.pad(x, {_pad(s.layout_in, missing)}))",
    )


def _pad(layout_in: Layout, amount: int) -> str:
    """``F.pad``'s argument that left-pads the time axis of a native input by ``amount``."""
    after = len(layout_in.groups) - 1 - _time_axis(layout_in)
    return "(" + "0, 0, " * after + f"{amount}, 0)"


def _time_axis(layout_in: Layout) -> int:
    return next(i for i, g in enumerate(layout_in.groups) if any(a not in "BC" for a in g))


def _grouped_subpixel(shape, batch, s):
    """Sub-pixel subject, one axis of ``S * K`` values per pixel: channel groups or interleaved
    values, which the audit must be told (a wrong guess moves predictions between channels)."""
    axis = s.subpixel_axis
    if axis is None or len(shape) != len(s.grid) + 1 or shape[0] != batch:
        return None
    channels = s.grid[axis]
    pixels = [g for i, g in enumerate(s.grid) if i != axis]
    rest = list(shape[1:])
    for n in pixels:
        if n not in rest:
            return None
        rest.remove(n)
    if len(rest) != 1 or rest[0] % channels:
        return None
    where = shape.index(rest[0], 1)
    letters = s.layout_in.letters.replace("S", "")
    grouped = letters[:where] + "(SC)" + letters[where:]
    interleaved = letters[:where] + "(CS)" + letters[where:]
    given = s.layout_in.letters.replace("S", "C")
    return AdapterError(
        f"the model's output has shape {shape}: {rest[0]} values per pixel for {channels} "
        f"channels, {rest[0] // channels} per sub-pixel, in an order the audit does not guess",
        f"say it in the output layout: --layout {given}->{grouped} ({channels} groups of "
        f"{rest[0] // channels}, a PixelCNN's channel groups) or {given}->{interleaved} "
        "(interleaved)",
    )


def _extra_axes(shape, batch, s):
    """More axes than batch, grid and one channel axis (e.g. ``(B, K, 3, H, W)``)."""
    grid = s.grid
    if len(shape) <= len(grid) + 2 or not shape or shape[0] != batch:
        return None
    rest = list(shape[1:])
    for n in grid:
        if n in rest:
            rest.remove(n)
    fix = (
        f"fold the extra axes into one channel axis in {HOOK}: def FN(model, x): "
        "return model(x).flatten(1, 2)"
    )
    if s.subpixel_axis is None and s.features > 1 and s.features in rest:
        fix += (
            f"; or, if the axis of {s.features} holds one prediction per input channel (a "
            "colour PixelCNN's logits per channel), audit at sub-pixel level: --order "
            f"raster+channels, naming that axis S in the output layout and the values C: "
            f"--layout {s.layout_in}->{_letters(shape, s)}"
        )
    return AdapterError(
        f"the model's output has shape {shape}: {len(shape)} axes for the {len(grid)}-D grid "
        f"{tuple(grid)}; besides the batch and the grid, axes of {' x '.join(map(str, rest))}",
        fix,
    )


def _letters(shape, s) -> str:
    """The sub-pixel output layout of a ``(B, ..., S, ...)`` output, e.g. ``BCSHW``."""
    sizes = dict(zip(s.layout_in.grid_letters, s.grid, strict=True))
    letters = "B"
    for n in shape[1:]:
        letter = next((a for a, g in sizes.items() if g == n and a not in letters), None)
        if letter is None:
            letter = "S" if n == s.features and "S" not in letters else "C"
        letters += letter
    return letters
