"""The evidence room: what each kind of evidence measures about a subject.

- :mod:`.gradients`: dependency maps from vector-Jacobian products (plain and colored);
- :mod:`.facts`: what a dependency map says (gradient violations, receptive field, blind spot);
- :mod:`.perturbation`: the perturbation sweep, the Hypothesis search and the noise floor;
- :mod:`.replacements`: what replaces the inputs at and after a cut;
- :mod:`.strategies`: the Hypothesis strategies the search draws from;
- :mod:`.loss`: the one-pass loss against the masked per-position loss;
- :mod:`.certificate`: the static proof (an upper bound of every dependency);
- :mod:`.sharding`: how each kind cuts its work in chunks that shards share.

Evidence reads a :class:`~properties.subject.Subject` and speaks the words of
:mod:`properties.verdict`; it never concludes (that is :mod:`properties.auditing`'s job).
"""

__all__: list[str] = []  # a room: its modules are imported by name
