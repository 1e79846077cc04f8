"""Fuzzing the CLI's argument handling: any argv built from the real flags and junk values ends
with exit code 0, 1 or 2 and at most one line on stderr, never a traceback nor an 'internal
error' (our catch-all for our own bugs).

``main(argv)`` runs in-process on small models (grids of at most 12 positions, a few Hypothesis
examples per search), so the valid combinations are real audits and stay cheap.
"""

import io
import os
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from paths import TARGETS

from properties import cli

BAD = f"{TARGETS}/bad.py"
MADE = f"{TARGETS}/made.py"

JUNK = st.sampled_from(["", "-1", "0", "x", "1e3", "nan", "--", "->", "@", ":", "\x00", "é", " "])
SMALL = st.integers(-2, 12).map(str)

TARGET = st.sampled_from(
    [
        f"{BAD}:causal_conv",
        f"{BAD}:structured",
        f"{BAD}:small_vocab",
        f"{BAD}:rounded",
        f"{BAD}:NOT_A_MODEL",
        f"{BAD}:raising_factory",
        f"{MADE}:made",
        f"{TARGETS}/no_such_file.py:net",
        "no_such_module:net",
        "zoo:no_such_model",
        "zoo:nettoy1d",  # only with a small --length (see below)
        "justaname",
    ]
) | JUNK

FLAGS = {
    "--layout": st.sampled_from(
        ["BT", "BTC", "BCT", "BT->BTC", "BT->B(TC)", "BT->B(CT)", "BCHW", "B(T", "BTT", "TB"]
    )
    | JUNK,
    "--length": SMALL | JUNK,
    "--shape": st.lists(SMALL, min_size=2, max_size=2) | st.lists(SMALL | JUNK, max_size=3),
    "--features": SMALL | JUNK,
    "--vocab": st.sampled_from(["30", "50", "2"]) | SMALL | JUNK,
    "--output": st.sampled_from(["logits", "hidden", "aux_loss", "0", "a.b", "-1"]) | JUNK,
    "--predicts": st.sampled_from(["current", "next", "auto"]) | JUNK,
    "--order": st.sampled_from(
        [
            "raster",
            "reverse",
            "@generation_order",
            "@nope",
            "@conv",
            f"{MADE}:ORDER",
            f"{MADE}:RANKS",
            f"{BAD}:NOT_A_MODEL",
            f"{BAD}:raising_factory",
            f"{BAD}:returns_a_string",
            f"{BAD}:needs_arguments",
            "no_such_module:x",
        ]
    )
    | JUNK,
    "--train": st.just(None),
    "--exact": st.just(None),
    "--checks": st.sampled_from(
        ["causality", "loss", "receptive_field,blind_spot", "causality,nope", ",", "loss,loss"]
    )
    | JUNK,
    "--seed": st.integers(-(2**70), 2**70).map(str) | JUNK,
    "--max-examples": st.sampled_from(["1", "2"]) | JUNK,
    "--json": st.sampled_from(["REPORT", "/no/such/dir/report.json", "/"]) | JUNK,
    "--help": st.just(None),
    "--no-such-flag": st.just(None),
}


# Invocations that work: the fuzz starts from one of them half of the time, so that its junk
# reaches the code behind the parser (orders, layouts, outputs, seeds), not only argparse.
RECIPES = [
    [f"{BAD}:causal_conv", "--length", "6", "--layout", "BT"],
    [f"{BAD}:structured", "--length", "6", "--layout", "BT", "--output", "logits"],
    [f"{BAD}:small_vocab", "--length", "6", "--vocab", "30"],
    [MADE + ":made", "--length", "12", "--layout", "BT->B(TC)", "--order", "@generation_order"],
    ["zoo:nettoy1d", "--length", "6"],
]


@st.composite
def argvs(draw):
    # Hypothesis favours 0 and the first element: those pick the common case.
    argv = list(draw(st.sampled_from([("audit",)] * 8 + [(), ("nope",)])))
    if draw(st.integers(0, 2)) < 2:
        argv += draw(st.sampled_from(RECIPES))  # later flags override the recipe's
    elif draw(st.integers(0, 9)) < 9:
        argv.append(draw(TARGET))
    flags = draw(st.lists(st.sampled_from(sorted(FLAGS)), max_size=4, unique=True))
    for flag in flags:
        value = draw(FLAGS[flag])
        argv.append(flag)
        if isinstance(value, list):
            argv.extend(value)
        elif value is not None:
            argv.append(value)
    if draw(st.integers(0, 9)) == 9:
        argv.insert(draw(st.integers(min(1, len(argv)), len(argv))), draw(JUNK))
    # Keep every real audit small: a few examples, a short grid (the zoo's default grids are
    # large and `zoo` alone audits every model: those are covered by the CLI's own tests).
    if "--max-examples" not in flags:
        argv += ["--max-examples", "1"]
    if "--length" not in argv and "--shape" not in flags:
        argv += ["--length", "6"]
    return argv


def run(argv: list[str], tmp_path: Path) -> tuple[int, str]:
    """``main(argv)`` in ``tmp_path`` (junk values of --json are written there)."""
    argv = [str(tmp_path / "report.json") if a == "REPORT" else a for a in argv]
    err, out = io.StringIO(), io.StringIO()
    here = os.getcwd()
    os.chdir(tmp_path)
    try:
        with redirect_stderr(err), redirect_stdout(out):
            try:
                code = cli.main(argv)
            except SystemExit as exc:  # argparse's --help exits; nothing else may
                assert "--help" in argv or "-h" in argv, f"SystemExit leaked for {argv}"
                code = exc.code
    finally:
        os.chdir(here)
    return code, err.getvalue()


@settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck))
@given(argv=argvs())
def test_cli_never_tracebacks(argv, tmp_path_factory):
    code, err = run(argv, tmp_path_factory.mktemp("fuzz"))
    assert code in (0, 1, 2), (argv, code, err)
    assert "Traceback" not in err, (argv, err)
    assert "internal error" not in err, (argv, err)
    assert len(err.strip().splitlines()) <= 1, (argv, err)
    if code == 2:
        assert err.startswith("python -m properties: "), (argv, err)
