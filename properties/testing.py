"""``assert_causal``: the audit as one assertion, for a user's test suite.

::

    from properties import assert_causal

    def test_my_model_is_causal():
        model = MyWaveNet()
        assert_causal(model, grid=(256,), layout="BCT->BTC", predicts="current")

On failure it raises an ``AssertionError`` that reads like ``torch.testing.assert_close``'s: one
sentence naming the prediction that moved, by how much, under which replacement, and the likely
bug; then the mode, the number of violations, Hypothesis' minimal counterexample and the evidence.
On success it returns the :class:`~properties.auditing.result.AuditResult`, to assert on receptive
fields. :func:`assert_incremental` does the same for the incremental check: every cached,
chunked or streamed run of the model gives the full pass's predictions.

Defaults for the whole run come from the pytest plugin (``--causal-train``, ``--causal-exact``;
see :mod:`properties.plugin`). The plugin imports this module at startup, so it imports nothing
heavy itself: torch and the harness load on the first call.
"""

# The run's defaults for ``train``, ``exact`` and ``device`` (None in a call means "take
# these"); ``device`` is the plugin's ``--causal-device``, already planned for this worker.
DEFAULTS = {"train": False, "exact": False, "device": None}
# The run's default contracts besides causality (``--causal-batch-independent``).
CONTRACT_DEFAULTS = {"batch_independent": False}


def set_defaults(**values) -> dict:
    """Set the run's defaults for ``train``/``exact``/``device`` (and the contracts':
    ``batch_independent``); return the previous ones, to restore (the plugin sets them when a
    pytest session starts and restores them when it ends)."""
    known = set(DEFAULTS) | set(CONTRACT_DEFAULTS)
    unknown = set(values) - known
    if unknown:
        raise TypeError(f"unknown defaults {sorted(unknown)}; known: {sorted(known)}")
    previous = {**DEFAULTS, **CONTRACT_DEFAULTS}
    for key, value in values.items():
        table = DEFAULTS if key in DEFAULTS else CONTRACT_DEFAULTS
        table[key] = value if key == "device" else bool(value)
    return previous


def assert_causal(
    model,
    *,
    grid,
    layout=None,
    predicts="auto",
    train=None,
    exact=None,
    checks=None,
    seed=0,
    max_examples=None,
    shard=None,
    prove=False,
    memory=None,
    budget=None,
    device=None,
    **subject_options,
):
    """Audit ``model`` and raise ``AssertionError`` with a readable message if it fails.

    ``grid``, ``layout``, ``predicts`` and ``subject_options`` (``features``, ``vocab``,
    ``output``, ``order``, ``classes``, ``value_range``, ``name``, ``forward``, ``batch``, and the
    contracts besides causality: ``documents``/``documents_as``, ``window``/``window_exact``/
    ``window_modules``, ``batch_independent``, ``padding``/``padding_mask``, ``contracts``) go to
    :func:`~properties.make_subject`: the model must keep every one of them. ``train``: also
    audit in training mode; ``exact``: every cut, output and position (``None``: the run's
    default, set by ``--causal-train`` and ``--causal-exact``). ``checks``: a subset of
    :data:`~properties.CHECKS` (default: all).
    ``max_examples`` bounds each Hypothesis search (default: the active Hypothesis profile's).
    ``shard=(i, n)``: audit only the i-th of n disjoint parts (see :func:`shards`): the model
    passes when every shard passes. ``prove=True``: the static certificate must *prove* the
    mode ``predicts`` needs (alone, in a few forward passes, unless ``checks`` asks for more:
    then the dynamic evidence must also agree with the proof). ``memory``: gigabytes the audit's
    stacked passes may hold (default: a quarter of the available memory, at most 1.5);
    ``budget``: seconds the audit may take (it then covers what fits, and ``result.coverage``
    says what). ``device``: move the model there first (``model.to(device)``; ``None``: the
    run's ``--causal-device``, else where it is); a bare ``"cuda"`` under ``pytest -n`` is
    ``cuda:{worker % GPUs}``, and a device this machine lacks raises
    :class:`~properties.devices.DeviceError` (never a CPU run, never a skip).

    The ``AssertionError``'s text is the JUnit failure text of the same audit on the command
    line (the JSON report's ``failure``), the line where the leak enters included.

    Returns the :class:`~properties.auditing.result.AuditResult` when the model passes.
    """
    __tracebackhide__ = True
    from properties.auditing.gather import audit
    from properties.auditing.options import AuditOptions
    from properties.output.report import failure_summary
    from properties.subject.canonical import make_subject

    if prove:
        checks = ("certificate",) if checks is None else tuple({*checks, "certificate"})
    device = DEFAULTS["device"] if device is None else device
    if device is not None:
        _move(model, device)
    options = AuditOptions(
        checks=None if checks is None else tuple(checks),
        train=DEFAULTS["train"] if train is None else train,
        exact=DEFAULTS["exact"] if exact is None else exact,
        seed=seed,
        max_examples=max_examples,
        shard=shard,
        memory=memory,
        budget=budget,
        progress=False,  # pytest owns the terminal
    )
    if CONTRACT_DEFAULTS["batch_independent"]:
        subject_options.setdefault("batch_independent", True)
    subject = make_subject(model, grid=grid, layout=layout, predicts=predicts, **subject_options)
    result = audit(subject, options=options)
    cert = result.certificate
    if prove and cert is not None and cert.status == "unavailable":
        # could not prove is not "sees the future": an error, not a failed assertion
        from properties.errors import AuditError

        raise AuditError(
            f"prove=True: the certificate is unavailable: {cert.reason}",
            "fix what it names, or let the dynamic evidence decide (prove=False)",
        )
    # Shard 0 runs the certificate (once, whole); the other shards leave the proof to it.
    proved = not prove or (cert.proved if cert is not None else shard is not None and shard[0])
    if not result.passed or not proved:
        raise AssertionError(failure_summary(result))
    return result


def _move(model, device) -> None:
    from torch import nn

    from properties import devices
    from properties.errors import AdapterError

    planned = devices.plan(device)
    if not isinstance(model, nn.Module):
        raise AdapterError(f"device={device!r} needs an nn.Module, got a "
                           f"{type(model).__name__}", "move it yourself, or drop device=")
    model.to(planned)


def assert_incremental(
    model,
    *,
    grid,
    layout=None,
    step=None,
    seed=0,
    max_examples=None,
    budget=None,
    policy=None,
    **subject_options,
):
    """Check that every way of running ``model`` a chunk at a time (cached, chunked,
    streamed: token by token, chunked prefill then decoding, a prefix reused by several
    continuations, state saved and restored, and the schedules Hypothesis draws) gives the
    predictions of one full pass at every position; raise ``AssertionError`` naming the
    minimal diverging schedule, the first diverging position, the difference in the model's
    dtype and in float64, and the first module whose output diverges.

    ``step(model, chunk, state) -> (predictions, state)`` runs the model on a chunk in its own
    layout (``state`` None at the start); Hugging Face causal LMs, pytorch-tcn and the
    lecture's models need none. ``grid``, ``layout`` and ``subject_options`` (``vocab``,
    ``output``, ``features``...) go to :func:`~properties.make_subject`; ``max_examples``
    bounds the Hypothesis search, ``budget`` the seconds; ``policy`` a
    :class:`~properties.CoveragePolicy` (``incremental_ulps``, ``incremental_poison``).

    Returns the :class:`~properties.evidence.incremental.IncrementalReport` when it holds.
    """
    __tracebackhide__ = True
    from properties.auditing.gather import audit
    from properties.auditing.options import DEFAULT_POLICY, AuditOptions
    from properties.extra import steppers  # noqa: F401 (registers the lecture's steppers)
    from properties.output.report import failure_summary
    from properties.subject.canonical import make_subject

    options = AuditOptions(
        checks=("incremental",),
        seed=seed,
        max_examples=max_examples,
        budget=budget,
        progress=False,
        policy=policy or DEFAULT_POLICY,
    )
    subject = make_subject(model, grid=grid, layout=layout, step=step, **subject_options)
    result = audit(subject, options=options)
    if not result.passed:
        raise AssertionError(failure_summary(result))
    return result.incremental


def shards(count: int) -> list:
    """``count`` pytest parameters ``(i, count)``, to split one audit over ``pytest -n``::

        @pytest.mark.parametrize("shard", shards(4))
        def test_big_model_is_causal(shard):
            assert_causal(model, grid=(8192,), layout="BCT->BTC", shard=shard)

    Each shard runs its own chunks of the sweep's cuts, of the map's colors and of the loss
    positions (shard 0 also runs the search for future leaks, shard 1 the one for the present);
    xdist spreads the shards over workers.
    The shards together run exactly the forward passes of the whole audit, and
    :func:`properties.merge` turns their results into the whole audit's result.
    """
    import pytest

    if count < 1:
        raise ValueError(f"shards needs a positive count, got {count}")
    return [pytest.param((i, count), id=f"shard{i + 1}of{count}") for i in range(count)]


# The same assertion under the name that says what it checks once contracts are declared.
assert_contract = assert_causal

__all__ = [
    "CONTRACT_DEFAULTS",
    "DEFAULTS",
    "assert_causal",
    "assert_contract",
    "assert_incremental",
    "set_defaults",
    "shards",
]
