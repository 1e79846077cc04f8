"""What needs the lecture's models (:mod:`causal`), kept out of the harness's core.

- :mod:`.architectures`: random causal conv nets that know their receptive field, and planted
  bugs;
- :mod:`.strategies`: Hypothesis strategies over them;
- :mod:`.zoo`: the bridge to the registry of built-in models (``audit zoo``).

Only the interfaces (CLI, plugin) and tests import this room; the core never does.
"""

__all__: list[str] = []  # a room: its modules are imported by name
