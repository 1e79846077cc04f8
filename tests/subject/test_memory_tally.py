"""The probe pass's byte counter: same counts with or without dynamo's wrapper, and no import
of ``torch._dynamo`` in a process that never loaded it (issue 20's receptive-field regression:
the import cost the dilated net's first map as much as the map)."""

import subprocess
import sys

import torch

from properties.subject import memory

PROBE = """
import sys, torch
from properties.subject import memory
_, cost = memory.measure(lambda: torch.ones(64) * 2)
print(cost.largest, 'torch._dynamo' in sys.modules)
"""


def test_a_probe_pass_imports_no_dynamo():
    out = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True,
                         check=True)
    assert out.stdout.split() == ["256", "False"]


def test_the_dynamo_safe_tally_counts_alike():
    def run():
        a = torch.ones(10, 10)
        return a @ a, a.view(100)  # a view is no new tensor

    counts = []
    for tally in (memory._Tally(), memory._DynamoSafeTally()):
        with tally:
            run()
        counts.append(tally.largest)
    assert counts == [400, 400]


def test_once_dynamo_is_loaded_the_wrapper_is_kept():
    import torch._dynamo  # noqa: F401  (loaded by any compiled model, or the certificate)

    assert isinstance(memory._tally(), memory._DynamoSafeTally)
    assert memory._DynamoSafeTally._should_skip_dynamo()
    assert not memory._Tally._should_skip_dynamo()
