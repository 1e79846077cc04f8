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
fields.

Defaults for the whole run come from the pytest plugin (``--causal-train``, ``--causal-exact``;
see :mod:`properties.plugin`). The plugin imports this module at startup, so it imports nothing
heavy itself: torch and the harness load on the first call.
"""

# The run's defaults for ``train`` and ``exact`` (None in a call means "take these").
DEFAULTS = {"train": False, "exact": False}


def set_defaults(**values) -> dict:
    """Set the run's defaults for ``train``/``exact``; return the previous ones, to restore
    (the plugin sets them when a pytest session starts and restores them when it ends)."""
    unknown = set(values) - set(DEFAULTS)
    if unknown:
        raise TypeError(f"unknown defaults {sorted(unknown)}; known: {sorted(DEFAULTS)}")
    previous = dict(DEFAULTS)
    DEFAULTS.update({k: bool(v) for k, v in values.items()})
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
    **subject_options,
):
    """Audit ``model`` and raise ``AssertionError`` with a readable message if it fails.

    ``grid``, ``layout``, ``predicts`` and ``subject_options`` (``features``, ``vocab``,
    ``output``, ``order``, ``classes``, ``value_range``, ``name``, ``forward``, ``batch``) go to
    :func:`~properties.make_subject`. ``train``: also audit in training mode; ``exact``: every
    cut, output and position (``None``: the run's default, set by ``--causal-train`` and
    ``--causal-exact``). ``checks``: a subset of :data:`~properties.CHECKS` (default: all).
    ``max_examples`` bounds each Hypothesis search (default: the active Hypothesis profile's).
    ``shard=(i, n)``: audit only the i-th of n disjoint parts (see :func:`shards`): the model
    passes when every shard passes. ``prove=True``: the static certificate must *prove* the
    mode ``predicts`` needs (alone, in a few forward passes, unless ``checks`` asks for more:
    then the dynamic evidence must also agree with the proof). ``memory``: gigabytes the audit's
    stacked passes may hold (default: a quarter of the available memory, at most 1.5);
    ``budget``: seconds the audit may take (it then covers what fits, and ``result.coverage``
    says what).

    Returns the :class:`~properties.auditing.result.AuditResult` when the model passes.
    """
    __tracebackhide__ = True
    from properties.auditing.gather import audit
    from properties.auditing.options import AuditOptions
    from properties.output.report import failure_summary
    from properties.subject.canonical import make_subject

    if prove:
        checks = ("certificate",) if checks is None else tuple({*checks, "certificate"})
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
    subject = make_subject(model, grid=grid, layout=layout, predicts=predicts, **subject_options)
    result = audit(subject, options=options)
    cert = result.certificate
    # Shard 0 runs the certificate (once, whole); the other shards leave the proof to it.
    proved = not prove or (cert.proved if cert is not None else shard is not None and shard[0])
    if not result.passed or not proved:
        raise AssertionError(failure_summary(result))
    return result


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


__all__ = ["DEFAULTS", "assert_causal", "set_defaults", "shards"]
