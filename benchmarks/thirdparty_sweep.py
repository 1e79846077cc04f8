"""Audit every causal-LM architecture of the installed transformers, and tabulate the verdicts.

    python benchmarks/thirdparty_sweep.py                       # every architecture, 2 workers
    python benchmarks/thirdparty_sweep.py mixtral jetmoe ...    # some of them
    python benchmarks/thirdparty_sweep.py --json after.json     # one row per architecture
    python benchmarks/thirdparty_sweep.py --root /work/main --json before.json   # another checkout
    python benchmarks/thirdparty_sweep.py --compare before.json after.json
    python benchmarks/thirdparty_sweep.py --checks certificate mixtral ...   # the proof alone

Each model type of ``MODEL_FOR_CAUSAL_LM_MAPPING_NAMES`` is built tiny with random weights
(``tests/targets/hf_causal_lms.py``: 2 to 4 layers, width 32, 4 experts, vocabulary 96, the
library's default attention and experts kernels) and audited as a user would, in its own process
(a memory limit and a timeout; one torch thread)::

    python -m properties audit tests/targets/hf_causal_lms.py:TYPE --layout BT --vocab 96
        --length 24 --output logits --predicts next --max-examples 10 --quiet

Every one of these architectures is causal (a decoder predicting the next token), except the
encoders transformers also maps to a causal LM (BERT-likes with ``is_decoder=False``...): the
table shows the verdict, not a judgement of it. ``--root`` audits with another checkout's
``properties`` (the model factories stay this checkout's), for before/after counts.
"""

import argparse
import json
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TARGETS = os.path.join(ROOT, "tests", "targets")
LENGTH, TIMEOUT, MEMORY_GB = 24, 600, 6


def audit_one(model_type: str, out: str, checks: str | None = None) -> None:
    """In the child: build, audit through the CLI in-process, write one row to ``out``."""
    import contextlib
    import io
    import resource

    limit = MEMORY_GB << 30
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    import torch

    torch.set_num_threads(1)
    sys.path.insert(0, TARGETS)
    import hf_causal_lms
    import transformers

    transformers.logging.set_verbosity_error()
    import properties
    from properties import cli

    row = {"type": model_type, "moe": None, "exit": None, "seconds": None,
           "properties": os.path.dirname(properties.__file__)}
    try:
        row["moe"] = hf_causal_lms.is_moe(hf_causal_lms.build(model_type))
    except Exception as exc:
        row.update(exit="build", reason=f"{type(exc).__name__}: {' '.join(str(exc).split())[:200]}")
        _write(out, row)
        return
    report = out + ".report.json"
    argv = [
        "audit", f"{TARGETS}/hf_causal_lms.py:{model_type.replace('-', '_')}",
        "--layout", "BT", "--vocab", str(hf_causal_lms.VOCAB), "--length", str(LENGTH),
        "--output", "logits", "--predicts", "next", "--max-examples", "10", "--quiet",
        "--json", report,
    ] + (["--checks", checks] if checks else [])  # fmt: skip
    text, err = io.StringIO(), io.StringIO()
    start = time.perf_counter()
    with contextlib.redirect_stdout(text), contextlib.redirect_stderr(err):
        code = cli.main(argv)
    row.update(exit=code, seconds=round(time.perf_counter() - start, 1))
    lines = text.getvalue().splitlines()
    row["headline"] = lines[1] if len(lines) > 1 else ""
    row["error"] = err.getvalue().strip().splitlines()[-1][:300] if err.getvalue().strip() else ""
    if os.path.exists(report):
        with open(report) as f:
            data = json.load(f)
        loss = data.get("loss_equivalence") or {}
        cert = data.get("certificate") or {}
        row.update(
            mode=data["mode"], passed=data["passed"], loss_holds=loss.get("holds"),
            loss_diff=loss.get("max_abs_diff"), certificate=cert.get("status"),
            notes=[n[:160] for n in data["notes"]],
        )  # fmt: skip
        os.remove(report)
    _write(out, row)


def _write(path: str, row: dict) -> None:
    with open(path, "w") as f:
        json.dump(row, f)


def run(model_type: str, root: str, workdir: str, checks: str | None = None) -> dict:
    """One model in its own process, with ``root``'s ``properties`` first on the path."""
    out = os.path.join(workdir, model_type + ".json")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYTHONPATH": root}
    env.pop("CAUSAL_AUDIT_DEBUG", None)
    start = time.perf_counter()
    try:
        proc = subprocess.run(
            [sys.executable, os.path.abspath(__file__), "--one", model_type, "--out", out]
            + (["--checks", checks] if checks else []),
            env=env, capture_output=True, text=True, timeout=TIMEOUT, cwd=ROOT,
        )  # fmt: skip
    except subprocess.TimeoutExpired:
        return {"type": model_type, "exit": "timeout", "seconds": TIMEOUT}
    if not os.path.exists(out):
        tail = (proc.stderr or "").strip().splitlines()[-1:] or [f"exit {proc.returncode}"]
        return {"type": model_type, "exit": "crash", "reason": tail[0][:300],
                "seconds": round(time.perf_counter() - start, 1)}  # fmt: skip
    with open(out) as f:
        return json.load(f)


def verdict(row: dict) -> str:
    """One word per row: pass, FAIL, error (exit 2), build, crash, timeout."""
    if row["exit"] == 0:
        return "pass"
    if row["exit"] == 1:
        return "FAIL"
    if row["exit"] == 2:
        return "error"
    return str(row["exit"])


def table(rows: list[dict]) -> str:
    lines = [f"{'type':28} {'moe':3} {'verdict':7} {'mode':9} {'loss':5} {'cert':10} {'time':>6}"]
    for r in sorted(rows, key=lambda r: r["type"]):
        loss = {True: "ok", False: "FAIL", None: "-"}[r.get("loss_holds")]
        lines.append(
            f"{r['type']:28} {'yes' if r.get('moe') else '':3} {verdict(r):7} "
            f"{r.get('mode') or '-':9} {loss:5} {r.get('certificate') or '-':10} "
            f"{r.get('seconds') or 0:>5.0f}s"
        )
        if verdict(r) == "FAIL":
            lines.append(f"    {r.get('headline', '')[:150]}")
        elif verdict(r) != "pass":
            lines.append(f"    {(r.get('error') or r.get('reason') or '')[:150]}")
    return "\n".join(lines)


def summary(rows: list[dict]) -> str:
    counts: dict[tuple[str, bool], int] = {}
    for r in rows:
        key = (verdict(r), bool(r.get("moe")))
        counts[key] = counts.get(key, 0) + 1
    parts = []
    for word in ("pass", "FAIL", "error", "build", "crash", "timeout"):
        moe, other = counts.get((word, True), 0), counts.get((word, False), 0)
        if moe or other:
            parts.append(f"{word} {moe + other} (MoE {moe})")
    return f"{len(rows)} architectures: " + ", ".join(parts)


def compare(before_path: str, after_path: str) -> str:
    with open(before_path) as f:
        before = {r["type"]: r for r in json.load(f)}
    with open(after_path) as f:
        after = {r["type"]: r for r in json.load(f)}
    lines = [f"before: {summary(list(before.values()))}"]
    lines.append(f"after:  {summary(list(after.values()))}")
    for t in sorted(set(before) & set(after)):
        b, a = verdict(before[t]), verdict(after[t])
        if b != a or before[t].get("mode") != after[t].get("mode"):
            lines.append(
                f"  {t:28} {b:7} {before[t].get('mode') or '-':9} -> {a:7} "
                f"{after[t].get('mode') or '-'}"
            )
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("types", nargs="*", help="model types (default: all)")
    parser.add_argument("--json", help="write the rows here")
    parser.add_argument("--root", default=ROOT, help="the checkout whose properties audits")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--checks", help="passed to the audit (e.g. certificate: the proof alone)")
    parser.add_argument("--compare", nargs=2, metavar=("BEFORE", "AFTER"))
    parser.add_argument("--one", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.one:
        audit_one(args.one, args.out, args.checks)
        return 0
    if args.compare:
        print(compare(*args.compare))
        return 0
    sys.path.insert(0, TARGETS)
    import hf_causal_lms

    types = args.types or hf_causal_lms.model_types()
    workdir = os.path.join("/tmp", f"thirdparty_sweep_{os.getpid()}")
    os.makedirs(workdir, exist_ok=True)
    rows = []
    with ThreadPoolExecutor(args.workers) as pool:
        for row in pool.map(lambda t: run(t, os.path.abspath(args.root), workdir, args.checks),
                                types):
            rows.append(row)
            print(f"{row['type']:28} {verdict(row):7} {row.get('mode') or '-':9} "
                  f"{row.get('seconds') or 0:.0f}s", file=sys.stderr, flush=True)  # fmt: skip
    print(table(rows))
    print(summary(rows))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
