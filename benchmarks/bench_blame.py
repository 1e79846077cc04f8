"""What blame costs, measured side by side in one run.

- **Passing audits**: the model's forward calls and the certificate's traced runs of a whole
  default audit, with blame and with it switched off (``locate`` returning nothing): equal.
- **Failing audits, certificate available**: the certificate's traced runs (the first, plus the
  one blame run it makes when its bound sees what it must not) and the cost of that blame run
  (the site tracer: Python stack at the op, refined position axes) next to the plain tracer's
  blame run it replaces and next to one forward pass of the model; ``locate`` adds no forward
  pass.
- **Failing audits, no certificate** (``--checks causality``): the forward passes and seconds
  ``locate`` adds (the counterexample replayed with module hooks).

    python benchmarks/bench_blame.py [--repeat N]
"""

import argparse
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "tests" / "targets"), str(ROOT / "tests")]

import hf_models  # noqa: E402
import leaky  # noqa: E402
import wild_leaks  # noqa: E402

from properties import audit, make_subject  # noqa: E402
from properties.auditing import gather, locate  # noqa: E402
from properties.evidence import certificate  # noqa: E402
from properties.evidence.certificate import sites, tracer  # noqa: E402
from properties.subject.calls import forward  # noqa: E402

FAILING = {  # name: (factory, make_subject keywords)
    "same_padding 1D (T=256)": (leaky.same_padding, {"grid": (256,), "layout": "BCT->BCT",
                                                      "predicts": "next"}),
    "sdpa bool mask (T=256)": (lambda: wild_leaks.sdpa_bool_mask(256), {
        "grid": (256,), "layout": "BTC", "predicts": "next"}),
    "BERT tiny (T=24)": (hf_models.bert, {"grid": (24,), "layout": "BT", "vocab": 50,
                                          "output": "last_hidden_state", "predicts": "next"}),
    "GPT-2 small, predicts current (T=128)": (hf_models.gpt2_small, {
        "grid": (128,), "layout": "BT", "vocab": 50257, "output": "logits",
        "predicts": "current"}),
}
PASSING = {
    "causal 1D (T=64)": (leaky.causal, {"grid": (64,), "layout": "BCT->BCT",
                                        "predicts": "current"}),
    "GPT-2 tiny (T=24)": (hf_models.gpt2, {"grid": (24,), "layout": "BT", "vocab": 50,
                                           "output": "logits", "predicts": "next"}),
}


class Counter:
    def __init__(self, model):
        self.calls = 0
        model.register_forward_hook(lambda *_: setattr(self, "calls", self.calls + 1))


def best_time(fn, repeat: int) -> float:
    """The fastest of ``repeat`` runs: on a shared machine the others wait for the CPU."""
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def traced_runs(fn) -> tuple[int, object]:
    calls = []
    original = certificate._trace

    def counting(*args, **kwargs):
        calls.append(kwargs.get("blame", False))
        return original(*args, **kwargs)

    certificate._trace = counting
    try:
        out = fn()
    finally:
        certificate._trace = original
    return len(calls), out


def _form(subject) -> str:
    """The summary form the certificate picks for this subject (dense or runs)."""
    from properties.evidence.certificate import deps

    return deps.form_for(subject.n_positions)


def plain_blame_run(subject):
    """The blame run as it was: the plain tracer, asked for its op string only."""
    original = sites.SiteTracer

    class Plain(tracer.Tracer):
        def __init__(self, n, grid, ranks, names, *, paths, present, form=None):
            super().__init__(n, grid, ranks, names, True, form)
            self.sites = {}

    certificate.SiteTracer = Plain
    try:
        return certificate._trace(subject, False, 0, _form(subject), blame=True)
    finally:
        certificate.SiteTracer = original


def failing(repeat: int) -> None:
    print("failing audits, certificate available")
    print(f"{'model':40} {'runs':>4} {'1st run':>8} {'blame run':>9} {'plain':>7} "
          f"{'fwd':>7} {'blame/fwd':>9} {'blame/1st':>9} {'locate fwd':>10}")
    for name, (factory, options) in FAILING.items():
        model = factory()
        subject = make_subject(model, **options)
        runs, cert = traced_runs(lambda s=subject: certificate.certify(s))
        assert cert.blames, name
        first = best_time(lambda s=subject: certificate._trace(s, False, 0, _form(s)), repeat)
        blamed = best_time(lambda s=subject: certificate._trace(s, False, 0, _form(s), blame=True),
                             repeat)
        plain = best_time(lambda s=subject: plain_blame_run(s), repeat)
        x = subject.draw_inputs(1, torch.Generator().manual_seed(0))
        with torch.no_grad():
            fwd = best_time(lambda s=subject, x=x: forward(s, x, seed=0), repeat)
        result = audit(subject, checks=("certificate",))
        counter = Counter(model)
        locate.locate(result)
        print(f"{name:40} {runs:>4} {first:>7.3f}s {blamed:>8.3f}s {plain:>6.3f}s "
              f"{fwd:>6.4f}s {blamed / fwd:>9.1f} {blamed / first:>9.2f} {counter.calls:>10}")


def without_certificate(repeat: int) -> None:
    print("\nfailing audits, no certificate (--checks causality): locate replays the "
          "counterexample")
    print(f"{'model':40} {'locate fwd':>10} {'locate':>8} {'audit':>8} {'share':>6}")
    for name, (factory, options) in list(FAILING.items())[:3]:
        model = factory()
        subject = make_subject(model, **options)
        start = time.perf_counter()
        result = audit(subject, checks=("causality",), max_examples=10)
        total = time.perf_counter() - start
        counter = Counter(model)
        took = best_time(lambda r=result: locate.locate(r), repeat)
        calls = counter.calls // repeat
        print(f"{name:40} {calls:>10} {took:>7.3f}s {total:>7.2f}s {took / total:>6.1%}")


def passing() -> None:
    print("\npassing audits: blame on vs off")
    print(f"{'model':40} {'fwd on':>7} {'fwd off':>7} {'traced on':>9} {'traced off':>10}")
    for name, (factory, options) in PASSING.items():
        counts = []
        for on in (True, False):
            model = factory()
            subject = make_subject(model, **options)
            counter = Counter(model)
            original = gather.locate
            if not on:
                gather.locate = lambda result, seed=0: {}
            try:
                runs, result = traced_runs(lambda s=subject: audit(s, max_examples=10))
            finally:
                gather.locate = original
            assert result.passed, name
            counts.append((counter.calls, runs))
        (on_calls, on_runs), (off_calls, off_runs) = counts
        print(f"{name:40} {on_calls:>7} {off_calls:>7} {on_runs:>9} {off_runs:>10}")
        assert (on_calls, on_runs) == (off_calls, off_runs), name


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(2)
    failing(args.repeat)
    without_certificate(args.repeat)
    passing()
    return 0


if __name__ == "__main__":
    sys.exit(main())
