"""The output room: what a person or a CI tool reads.

- :mod:`.report`: the JSON report (the CLI's contract) and the text report;
- :mod:`.pictures`: dependency maps and receptive fields drawn with matplotlib.
"""

__all__: list[str] = []  # a room: its modules are imported by name
