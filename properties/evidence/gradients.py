"""Gradient evidence: which inputs each output depends on, from vector-Jacobian products.

``seen[t, s]`` is true when the prediction at output position ``t`` has a non-zero gradient with
respect to input position ``s`` at one of several random inputs (the union: a dead ReLU at one
input must not fake a hole). Gradients are taken in float64, so that a zero is a zero, and, for
token models, at the output of the embedding that reads the tokens.

Two ways to get the same map:

- ``plain``: one VJP per output, batched by stacking copies of the inputs along the batch axis
  (one copy per output) and chunked to bound memory. Cost: N passes.
- ``colored``: outputs whose inputs do not overlap can share one VJP, as in sparse-Jacobian
  estimation. A few outputs are probed first (plain); the box of offsets they reach gives a
  coloring of the grid (``t_d mod period_d``) in which outputs of one color should not share
  inputs. Each color is differentiated twice, with weights 1 and ``beta_t`` (distinct, random)
  per output: where a single output ``t`` contributes at input ``s``, the two gradients are in
  ratio ``beta_t`` (up to rounding), which names ``t``. Inputs where several outputs contribute
  (the ratio matches no ``beta``) are settled by plain VJPs of that color's outputs. So the
  method needs no assumption about the model: a leak or a non-local dependency costs more
  passes, never a wrong map. Its one limit: a contribution smaller than ``RATIO_TOLERANCE``
  times another output's at the same input of the same color can be missed (the plain map has
  no such limit).

Cost of ``colored``: about ``2 * prod(period_d)`` passes, which follows the receptive field and not
the length of the sequence.
"""

import copy
import math
import weakref
from dataclasses import dataclass

import torch
from torch import nn

from properties import progress
from properties.errors import describe
from properties.evidence.perturbation import batch_interaction
from properties.evidence.sharding import chunked, copies_per_pass, leads, spread
from properties.subject import batching, memory
from properties.subject.calls import seeded
from properties.subject.canonical import Subject

__all__ = [
    "DependencyMap",
    "DifferentiableInput",
    "GradientUnavailable",
    "POSITIONS_PER_PASS",
    "RATIO_TOLERANCE",
    "STRENGTH",
    "color_count",
    "colored_map",
    "coordinates",
    "dependency_map",
    "distinct_weights",
    "find_token_embedding",
    "merge_maps",
    "offset_periods",
    "plain_map",
    "plain_map_around",
    "probe_positions",
    "random_directions",
    "vjp_bytes",
    "weighted_vjps",
]

# A gradient that is itself a near-cancelling sum has a relative rounding error far above 1e-16
# (4.5e-9 measured on the lecture's dilated net), so the ratio test allows 1e-6; the weights
# differ by at least 1/N, so it still names exactly one output.
RATIO_TOLERANCE = 1e-6
STRENGTH = torch.bfloat16
POSITIONS_PER_PASS = 1 << 14  # positions x samples per forward pass: bounds the memory of a chunk


# Measured VJP costs and batch interactions by model and input shape: every map of one audit
# reuses its probe's.
_MEASURED: "weakref.WeakKeyDictionary[nn.Module, dict]" = weakref.WeakKeyDictionary()


class GradientUnavailable(Exception):
    """The model gives no usable gradient (not differentiable, no embedding for its tokens)."""


@dataclass(frozen=True)
class DependencyMap:
    outputs: torch.Tensor  # (M,) flat output positions, one per row
    seen: torch.Tensor  # (M, N) bool
    # (M, N) largest |gradient| seen, in bfloat16: an effect size needs three digits, not
    # float32's seven, and the map of a length-8192 grid then fits in 200 MB with `seen`.
    strength: torch.Tensor
    passes: int  # VJP passes spent (one pass = one backward over one copy of the inputs)
    method: str
    probe_silent: bool = False  # the probed outputs have no gradient at all
    row_inputs: int = 0  # inputs the sampled rows were taken on (0: all of the map's)

    def row_of(self) -> dict[int, int]:
        return {int(t): i for i, t in enumerate(self.outputs)}


# ---------------------------------------------------------------------------------------------
# The differentiable input


def find_token_embedding(subject: Subject, tokens: torch.Tensor) -> nn.Module:
    """The first ``nn.Embedding`` that is called on the tokens themselves."""
    module = subject.module
    embeddings = [m for m in module.modules() if isinstance(m, nn.Embedding)] if module else []
    native = subject.native_input(tokens.to(subject.device))
    called: list[nn.Module] = []

    def hook(mod, args, kwargs, out):
        x = _read(args, kwargs)
        if x is not None and x.shape[1:] == native.shape[1:]:
            # the tokens, or their first slice (a model run at one batch size only)
            first = batching.rows(0, x.shape[0], len(native))
            if torch.equal(x, native) or torch.equal(x, native[first]):
                called.append(mod)

    handles = [m.register_forward_hook(hook, with_kwargs=True) for m in embeddings]
    try:
        with torch.no_grad():
            subject(tokens)
    finally:
        for h in handles:
            h.remove()
    if not called:
        raise GradientUnavailable(
            "no nn.Embedding reads the tokens, so there is no input to differentiate"
        )
    return called[0]


def _read(args: tuple, kwargs: dict) -> torch.Tensor | None:
    """The indices an embedding was called on: positionally or as ``input=`` (a tensor: the
    hook runs after ``nn.Embedding.forward`` accepted it)."""
    return args[0] if args else kwargs.get("input")


class DifferentiableInput:
    """Runs the subject on ``copies`` stacked copies of the base inputs and returns the tensor to
    differentiate (the float inputs, or the embedding's output for tokens) with the outputs."""

    def __init__(self, subject: Subject, inputs: torch.Tensor, *, seed: int = 0):
        self.subject = subject
        self.inputs = inputs
        self.seed = seed
        self.embedding = find_token_embedding(subject, inputs) if subject.tokens else None
        self._local: dict = {}  # measurements, for a model that is not an nn.Module

    @property
    def batch(self) -> int:
        return self.inputs.shape[0]

    def _measured(self, what: str, compute):
        """A measurement (``"cost"``, ``"interacts"``), made once per model, input shape, dtype
        and mode: every map of one audit reuses its probe's."""
        module = self.subject.module
        training = module.training if module is not None else None
        key = (what, tuple(self.inputs.shape), self.subject.dtype, training)
        known = _MEASURED.setdefault(module, {}) if module is not None else self._local
        if key not in known:
            known[key] = compute()
        return known[key]

    def interacts(self) -> bool:
        """Whether a sample's outputs move with the other samples of its batch (batch statistics,
        a mean over the batch), measured as the perturbation evidence measures it. Copies stacked
        for different outputs must then not share a pass: the backward of one copy's output
        would reach the inputs of another copy and be read as that copy's output's dependency."""

        def measure() -> bool:
            _, independent = batch_interaction(self.subject, self.inputs, seed=self.seed)
            return not independent

        return self._measured("interacts", measure)

    def cost(self) -> int:
        """Bytes one copy of the inputs holds in a VJP pass: measured on a probe pass of one
        input (what autograd saves, the largest intermediate, the output), times the batch;
        plus the cotangents and the gradient."""

        def measure() -> int:
            one = copy.copy(self)
            one.inputs = self.inputs[:1]
            module = self.subject.module
            exclude = tuple(module.parameters()) + tuple(module.buffers()) if module else ()
            _, cost = memory.measure(lambda: one.run(1), saved=True, exclude=exclude)
            return self.batch * (cost.per_copy + 2 * cost.output)

        return self._measured("cost", measure)

    def run(self, copies: int) -> tuple[torch.Tensor, torch.Tensor]:
        reps = (copies,) + (1,) * (self.inputs.dim() - 1)
        x = self.inputs.repeat(*reps)
        with seeded(self.subject, self.seed), torch.enable_grad():
            if self.embedding is None:
                leaf = x.to(self.subject.device, self.subject.dtype).requires_grad_(True)
                y = self.subject(leaf)
            else:
                leaf, y = self._run_tokens(x)
        if not y.requires_grad:
            raise GradientUnavailable("the outputs do not depend differentiably on the inputs")
        return leaf, y

    def _run_tokens(self, tokens):
        native = self.subject.native_input(tokens.to(self.subject.device))
        captured, parts, unmatched = [], [0], []

        def hook(mod, args, kwargs, out):
            x = _read(args, kwargs)
            if x is not None and x.shape != native.shape and x.shape[1:] == native.shape[1:]:
                # a model run at one batch size only: one leaf embeds every token, each call
                # (one slice) gets its rows of it
                rows = batching.rows(parts[0], x.shape[0], len(native))
                if not torch.equal(x, native[rows]):
                    unmatched.append(tuple(x.shape))
                    return None
                if not captured:
                    whole = mod.forward(native)  # forward(), not __call__: no hook again
                    captured.append(whole.detach().requires_grad_(True))
                parts[0] += 1
                return captured[0][rows]
            if captured:  # only the first call reads the tokens
                return None
            captured.append(out.detach().requires_grad_(True))
            return captured[0]

        handle = self.embedding.register_forward_hook(hook, with_kwargs=True)
        try:
            y = self.subject(tokens)
        finally:
            handle.remove()
        if unmatched:  # a slice without gradient would hide what it sees
            raise GradientUnavailable(
                f"the model runs in slices and its embedding read {unmatched[0]} tokens that "
                "are not the slice expected"
            )
        leaf = captured[0]
        n = self.subject.n_positions
        if leaf.dim() < 3 or leaf.shape[0] != tokens.shape[0] or leaf[0].numel() % n:
            raise GradientUnavailable(
                f"the embedding's output has shape {tuple(leaf.shape)}, not (B, positions, D)"
            )
        return leaf, y


def weighted_vjps(
    source: DifferentiableInput,
    weight_sets: list[torch.Tensor],
    directions: torch.Tensor,
    *,
    per_pass: int = POSITIONS_PER_PASS,
    shard: tuple[int, int] | None = None,
) -> tuple[list[int], list[torch.Tensor]]:
    """Gradients of ``sum_t W[p, t] * <u[b, t], y[b, t]>`` for every row ``p`` of each weight set.

    ``weight_sets``: tensors ``(P, N)`` sharing the same ``P`` (one copy of the inputs per row;
    all sets reuse that copy's forward pass, hence the same dropout masks).
    ``directions``: ``u``, ``(B, N, K)``. Returns the rows computed (all of them, or this
    ``shard``'s chunks) and, per set, their gradients ``(rows, B, N, D)``.
    """
    n_rows = weight_sets[0].shape[0]
    batch, n = source.batch, source.subject.n_positions
    rows: list[int] = []
    results: list[list[torch.Tensor]] = [[] for _ in weight_sets]
    # Each gradient is one input's size per row; the cotangents are the output's.
    size = memory.copies(
        source.cost(),
        spread(copies_per_pass(batch, n, per_pass), n_rows),
        what=f"one VJP pass ({batch} input(s), {source.subject.dtype})",
    )
    # Measured only where copies would be stacked; two no-grad passes of two copies cost less
    # than the two VJP copies that fit.
    if size > 1 and source.interacts():
        size = 1
    for chunk in chunked(range(n_rows), size, shard):
        start, stop = chunk[0], chunk[-1] + 1
        rows.extend(chunk)
        leaf, y = source.run(stop - start)
        u = directions.to(y.dtype)
        for i, weights in enumerate(weight_sets):
            w = weights[start:stop].to(y.dtype)
            cot = (w[:, None, :, None] * u[None]).reshape(y.shape)
            try:
                (g,) = torch.autograd.grad(
                    y, leaf, cot, retain_graph=i < len(weight_sets) - 1, allow_unused=True
                )
            except Exception as exc:  # any error of the model's backward, not only torch's
                raise GradientUnavailable(f"backward failed: {describe(exc)}") from exc
            if g is None:  # the outputs need grad (parameters) but no path reaches the input
                raise GradientUnavailable(
                    "no gradient path from the outputs to the inputs (an integer cast or a detach?)"
                )
            results[i].append(g.detach().reshape(stop - start, batch, n, -1))
        del leaf, y
        progress.advance(stop - start)
    empty = torch.zeros(0, batch, n, 1, dtype=torch.float64)
    return rows, [torch.cat(parts) if parts else empty for parts in results]


def random_directions(y_shape, generator: torch.Generator) -> torch.Tensor:
    """One random unit-free direction per (sample, position) over the K outputs: an exact
    cancellation of the gradient then has probability zero."""
    return torch.randn(y_shape, generator=generator, dtype=torch.float64)


# ---------------------------------------------------------------------------------------------
# Plain map


def plain_map(
    subject: Subject,
    inputs: torch.Tensor,
    *,
    outputs: torch.Tensor | None = None,
    seed: int = 0,
    per_pass: int = POSITIONS_PER_PASS,
    shard: tuple[int, int] | None = None,
) -> DependencyMap:
    """One VJP per output position (rows ``outputs``, default all; only this ``shard``'s)."""
    source = DifferentiableInput(subject, inputs, seed=seed)
    n = subject.n_positions
    outputs = torch.arange(n) if outputs is None else torch.as_tensor(outputs, dtype=torch.long)
    directions = _directions(source, seed)
    one_hot = torch.zeros(len(outputs), n, dtype=torch.float64)
    one_hot[torch.arange(len(outputs)), outputs] = 1.0
    rows, (g,) = weighted_vjps(source, [one_hot], directions, per_pass=per_pass, shard=shard)
    magnitude = g.abs().amax(dim=(1, 3))  # (M, N)
    return DependencyMap(
        outputs[rows], magnitude > 0, magnitude.to(STRENGTH), passes=len(rows), method="plain"
    )


def vjp_bytes(subject: Subject, inputs: torch.Tensor) -> int:
    """Measured bytes one VJP pass over one copy of ``inputs`` holds (see :mod:`.memory`)."""
    return DifferentiableInput(subject, inputs).cost()


def plain_map_around(
    subject: Subject,
    inputs: torch.Tensor,
    outputs: torch.Tensor,
    probe: DependencyMap,
    seed: int,
    per_pass: int = POSITIONS_PER_PASS,
    shard: tuple[int, int] | None = None,
) -> DependencyMap:
    """The plain map of ``outputs``, reusing the rows the probe already computed (the probe is
    every shard's; its rows go to the first shard's part, as its passes do)."""
    done, wanted = set(probe.outputs.tolist()), set(outputs.tolist())
    rest = torch.tensor([t for t in outputs.tolist() if t not in done], dtype=torch.long)
    dmap = plain_map(subject, inputs, outputs=rest, seed=seed, per_pass=per_pass, shard=shard)
    if leads(shard):
        keep = torch.tensor([t in wanted for t in probe.outputs.tolist()])
        kept = DependencyMap(
            probe.outputs[keep], probe.seen[keep], probe.strength[keep], probe.passes, "plain"
        )
        dmap = merge_maps([kept, dmap])
    return dmap


def _directions(source: DifferentiableInput, seed: int) -> torch.Tensor:
    with torch.no_grad():
        _, y = source.run(1)
    generator = torch.Generator().manual_seed(seed + 1)
    return random_directions(y.shape, generator)


# ---------------------------------------------------------------------------------------------
# Colored map


def probe_positions(grid: tuple[int, ...], count: int = 8) -> torch.Tensor:
    """A few flat positions spread over the grid: corners, the centre, evenly spaced interior."""
    n = math.prod(grid)
    picks = {n - 1, n // 2, 0}
    picks.update(int(round(i * (n - 1) / (count - 1))) for i in range(count))
    return torch.tensor(sorted(picks))


def coordinates(grid: tuple[int, ...]) -> torch.Tensor:
    """(N, len(grid)) grid coordinates of every flat position."""
    axes = torch.meshgrid(*[torch.arange(g) for g in grid], indexing="ij")
    return torch.stack([a.flatten() for a in axes], dim=1)


def color_count(probe: DependencyMap, grid: tuple[int, ...]) -> int:
    """How many colors (passes, twice over) the colored map would need after this probe."""
    return math.prod(offset_periods(probe, grid))


def offset_periods(probe: DependencyMap, grid: tuple[int, ...]) -> tuple[int, ...]:
    """Per grid axis, the width of the box of offsets ``s - t`` reached by the probed outputs."""
    coords = coordinates(grid)
    lo = [0] * len(grid)
    hi = [0] * len(grid)
    for row, t in enumerate(probe.outputs):
        deps = probe.seen[row].nonzero().flatten()
        if len(deps) == 0:
            continue
        offsets = coords[deps] - coords[t]
        lo = [min(a, int(b)) for a, b in zip(lo, offsets.min(0).values, strict=True)]
        hi = [max(a, int(b)) for a, b in zip(hi, offsets.max(0).values, strict=True)]
    return tuple(min(g, h - low + 1) for g, h, low in zip(grid, hi, lo, strict=True))


def colored_map(
    subject: Subject,
    inputs: torch.Tensor,
    *,
    seed: int = 0,
    per_pass: int = POSITIONS_PER_PASS,
    max_colors_fraction: float = 0.5,
    probe: DependencyMap | None = None,
    shard: tuple[int, int] | None = None,
) -> DependencyMap:
    """The full map (every output), in about ``2 * colors`` passes instead of ``N``.

    Falls back to :func:`plain_map` when the probed receptive field is so wide that coloring
    would save less than half the passes. ``probe``: rows already computed for
    :func:`probe_positions` (they set the coloring). ``shard=(i, n)``: only the colors of this
    shard's chunks (see :mod:`properties.evidence.sharding`), for :func:`merge_maps` to unite.
    """
    n, grid = subject.n_positions, subject.grid
    if probe is None:
        probe = plain_map(
            subject, inputs, outputs=probe_positions(grid), seed=seed, per_pass=per_pass
        )
    probe_passes = probe.passes if leads(shard) else 0
    periods = offset_periods(probe, grid)
    n_colors = math.prod(periods)
    if n_colors >= max_colors_fraction * n:  # two passes per color: no cheaper than plain
        return plain_map_around(subject, inputs, torch.arange(n), probe, seed, per_pass, shard)

    coords = coordinates(grid)
    color = torch.zeros(n, dtype=torch.long)
    for axis, period in enumerate(periods):
        color = color * period + coords[:, axis] % period
    beta = distinct_weights(n, seed)
    alpha_w = torch.zeros(n_colors, n, dtype=torch.float64)
    alpha_w[color, torch.arange(n)] = 1.0
    beta_w = alpha_w * beta

    source = DifferentiableInput(subject, inputs, seed=seed)
    directions = _directions(source, seed)
    mine, (g1, g2) = weighted_vjps(
        source, [alpha_w, beta_w], directions, per_pass=per_pass, shard=shard
    )
    members = [torch.nonzero(color == c).flatten() for c in mine]
    seen, strength, unresolved = _attribute(g1, g2, members, beta, n)
    passes = probe_passes + 2 * len(mine)

    for c in unresolved:  # settle shared inputs exactly: plain rows of the color, on their own
        exact = plain_map(subject, inputs, outputs=members[c], seed=seed, per_pass=per_pass)
        seen[members[c]] = exact.seen
        strength[members[c]] = exact.strength
        passes += exact.passes
    outputs = torch.cat(members).sort().values if members else torch.zeros(0, dtype=torch.long)
    if len(outputs) < n:  # a shard: its rows only (the whole map needs no copy)
        seen, strength = seen[outputs], strength[outputs]
    return DependencyMap(outputs, seen, strength, passes=passes, method="colored")


def distinct_weights(n: int, seed: int) -> torch.Tensor:
    """``n`` weights in ``[1, 2)``, a random permutation of an even grid: any two differ by at
    least ``1/n``, far more than the ratio test's tolerance, so a ratio names one output."""
    generator = torch.Generator().manual_seed(seed + 2)
    return 1.0 + torch.randperm(n, generator=generator).double() / n


def merge_maps(maps: list[DependencyMap]) -> DependencyMap:
    """One map from the maps of shards that computed disjoint rows."""
    outputs = torch.cat([m.outputs for m in maps])
    order = torch.argsort(outputs)
    return DependencyMap(
        outputs=outputs[order],
        seen=torch.cat([m.seen for m in maps])[order],
        strength=torch.cat([m.strength for m in maps])[order],
        passes=sum(m.passes for m in maps),
        method=maps[0].method,
        probe_silent=maps[0].probe_silent,
    )


def _attribute(g1, g2, members, beta, n):
    """Name the single output behind each non-zero gradient entry, or flag the color.

    ``g1, g2``: ``(colors, B, N, D)`` gradients with weights 1 and beta; ``members[c]``: the
    outputs of color ``c``. Returns the (N, N) map (rows of these outputs filled), its strengths
    and the colors that have an input where the ratio names no single output.
    """
    seen = torch.zeros(n, n, dtype=torch.bool)
    strength = torch.zeros(n, n, dtype=STRENGTH)
    unresolved = []
    for c, outputs in enumerate(members):
        a, b = g1[c], g2[c]  # (B, N, D)
        lit = (a != 0) | (b != 0)
        if not lit.any():
            continue
        both = (a != 0) & (b != 0)
        if (lit & ~both).any():  # cancellation in one pass only: several contributors
            unresolved.append(c)
            continue
        ratio = torch.where(both, b / torch.where(both, a, torch.ones_like(a)), torch.nan)
        betas = beta[outputs]  # (m,)
        order = torch.argsort(betas)
        idx = _nearest(betas[order], ratio[both])
        nearest = betas[order][idx]
        if ((ratio[both] - nearest).abs() > RATIO_TOLERANCE * nearest).any():
            unresolved.append(c)
            continue
        owner = torch.full(a.shape, -1, dtype=torch.long)
        owner[both] = outputs[order[idx]]
        # Every component of one input (over samples and features) must name the same output.
        per_input = owner.permute(1, 0, 2).reshape(n, -1)  # (N, B*D)
        hi = per_input.amax(1)
        lo = torch.where(per_input < 0, torch.full_like(per_input, n), per_input).amin(1)
        has = hi >= 0
        if (has & (hi != lo)).any():
            unresolved.append(c)
            continue
        inputs_lit = has.nonzero().flatten()
        seen[hi[inputs_lit], inputs_lit] = True
        mag = a.abs().amax(dim=(0, 2))  # (N,)
        strength[hi[inputs_lit], inputs_lit] = mag[inputs_lit].to(STRENGTH)
    return seen, strength, unresolved


def _nearest(sorted_values: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Index of the value nearest to each ``x`` in an ascending tensor."""
    if len(sorted_values) == 1:
        return torch.zeros_like(x, dtype=torch.long)
    right = torch.searchsorted(sorted_values, x).clamp(1, len(sorted_values) - 1)
    left = right - 1
    closer_left = (x - sorted_values[left]).abs() <= (sorted_values[right] - x).abs()
    return torch.where(closer_left, left, right)


def dependency_map(
    subject: Subject,
    inputs: torch.Tensor,
    *,
    method: str = "colored",
    outputs: torch.Tensor | None = None,
    seed: int = 0,
    per_pass: int = POSITIONS_PER_PASS,
) -> DependencyMap:
    """The dependency map of ``subject`` at ``inputs`` (a batch: the map is their union).

    ``method="colored"`` (all outputs, few passes) or ``"plain"`` (one pass per output; the only
    choice when ``outputs`` picks a subset).
    """
    if outputs is not None or method == "plain":
        return plain_map(subject, inputs, outputs=outputs, seed=seed, per_pass=per_pass)
    if method != "colored":
        raise ValueError(f"unknown method {method!r}: use 'colored' or 'plain'")
    return colored_map(subject, inputs, seed=seed, per_pass=per_pass)
