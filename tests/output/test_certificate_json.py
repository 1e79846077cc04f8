"""The certificate's JSON says where the tracer lost sight: values read into Python (``reads``)
and values of unknown origin that reach an output (``unknown``)."""

import threading

import torch
from torch import nn

from properties import make_subject
from properties.evidence.certificate import certify
from properties.output.report import certificate_dict


class Reads(nn.Module):
    """Causal, but it reads an input value into Python (a branch on a sum)."""

    def forward(self, x):
        if x.sum().item() > 1e9:
            return x * 2
        return torch.cumsum(x, dim=1)


class Threaded(nn.Module):
    """Makes its output on another thread, where the dispatch mode does not see it."""

    def forward(self, x):
        out = {}
        worker = threading.Thread(target=lambda: out.update(y=x.flip(1) * 1.0))
        worker.start()
        worker.join()
        return out["y"]


def certificate_json(model):
    subject = make_subject(model, grid=(8,), layout="BTC", features=1, predicts="current")
    result = type("Result", (), {"certificate": certify(subject), "subject": subject,
                                 "certificate_exact": None, "unsound": []})()
    return certificate_dict(result)


def test_a_read_into_python_is_named_with_its_line():
    data = certificate_json(Reads())  # a float read, not a boolean: out of the tracer's sight
    assert data["status"] == "not_proved"
    assert any("test_certificate_json.py:18" in r for r in data["reads"])


def test_work_the_tracer_did_not_see_is_of_unknown_origin_and_not_proved():
    data = certificate_json(Threaded())
    assert data["status"] == "not_proved" and data["unknown"]
