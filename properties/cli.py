"""``python -m properties audit TARGET ...``: the audit as a command, for people and CI gates.

Exit codes: 0 the model passes, 1 it does not (it sees what it must not, its loss check fails, or
the certificate alone does not prove it), 2 the audit could not say: a usage or target error, a
model that does not run, evidence that could not be gathered for any asked check (one line on
stderr that says what is wrong and how to fix it; never a traceback).
"""

import argparse
import json
import math
import os
import re
import sys
import traceback
from collections.abc import Sequence

import torch

from properties.auditing.gather import audit
from properties.auditing.options import CHECKS, AuditOptions
from properties.errors import AuditError, TargetError, describe
from properties.output.report import dumps, render_table, render_text, to_dict
from properties.subject.canonical import (
    CONVENTIONS,
    NAMED_ORDERS,
    contract_clauses,
    make_subject,
)
from properties.target import (
    build_model,
    import_source,
    load_target,
    resolve_attribute,
    split_target,
)

PROG = "python -m properties"


class UsageError(AuditError):
    pass


class _Parser(argparse.ArgumentParser):
    """argparse, but errors are one line and raise instead of exiting."""

    def error(self, message):
        raise UsageError(message, f"see `{PROG} audit --help`")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog=PROG, description="Audit causal models: does any prediction see the future?"
    )
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    a = sub.add_parser("audit", help="audit a model", description=__doc__)
    a.add_argument("target", help="zoo, zoo:NAME, package.module:attr or path/to/file.py:attr")
    a.add_argument("--layout", help="input layout, or IN->OUT (BTC, BCT, BT, BCHW, BHWC...)")
    grid = a.add_mutually_exclusive_group()
    grid.add_argument("--length", type=_positive, metavar="T", help="sequence length (1D)")
    grid.add_argument(
        "--shape", type=_positive, nargs=2, metavar=("H", "W"), help="image size (2D)"
    )
    a.add_argument("--features", type=_positive, default=1, metavar="F", help="input channels")
    a.add_argument("--vocab", type=_positive, metavar="V", help="token inputs in [0, V)")
    a.add_argument("--output", metavar="FIELD", help="field of a structured output (logits, 0...)")
    a.add_argument("--predicts", choices=CONVENTIONS, default="auto")
    a.add_argument(
        "--order",
        metavar="SPEC",
        help="generation order: raster (default), reverse, raster+channels or channels+raster "
        "(sub-pixel: the input's channels are part of the order, as in a colour PixelCNN), "
        "@ATTR (an attribute of the model) or module:attr / file.py:attr",
    )
    a.add_argument(
        "--forward",
        metavar="FN",
        help="module:fn or file.py:fn, a function (model, x) -> predictions called instead of "
        "model(x) (a model that returns the last position only, or folds batch and time)",
    )
    a.add_argument(
        "--step",
        metavar="FN",
        help="module:fn or file.py:fn, a function (model, chunk, state) -> (predictions, state) "
        "that runs the model a chunk at a time, for --checks incremental (Hugging Face, "
        "pytorch-tcn and the lecture's models need none); with it, the default checks include "
        "incremental",
    )
    a.add_argument(
        "--batch",
        type=_positive,
        metavar="N",
        help="run every forward pass at batch size N (for a model that caches state sized by "
        "its first batch; found out by itself when the first call is the audit's)",
    )
    _contract_arguments(a)
    a.add_argument("--train", action="store_true", help="also audit in training mode")
    a.add_argument(
        "--checks",
        type=_checks,
        default=None,
        help=f"comma-separated subset of {','.join(CHECKS)} (default: all but incremental; the "
        "certificate only up to 16384 positions; incremental with --step). Exit codes of "
        "--checks incremental: 0 every stepped run equals the full pass, 1 one diverges, 2 the "
        "model cannot be stepped",
    )
    a.add_argument("--exact", action="store_true", help="every cut, output and position")
    a.add_argument("--seed", type=_seed, default=0, help="0 <= SEED < 2**32")
    a.add_argument(
        "--max-examples",
        type=_positive,
        metavar="N",
        help="Hypothesis examples per search (default: the Hypothesis profile's)",
    )
    a.add_argument("--json", metavar="PATH", help="write the JSON report here")
    a.add_argument(
        "--shard",
        type=_shard,
        metavar="I/N",
        help="audit only the I-th of N disjoint parts (0 <= I < N); --json then also holds the "
        "evidence that `merge` needs",
    )
    a.add_argument(
        "--pictures",
        metavar="DIR",
        help="draw PNG pictures of what each prediction sees into DIR (needs matplotlib)",
    )
    a.add_argument(
        "--memory",
        type=_positive_float,
        metavar="GB",
        help="memory the audit's stacked passes may hold (default: a quarter of the available "
        "memory, at most 1.5; the model and its float64 copy come on top)",
    )
    a.add_argument(
        "--budget",
        type=_positive_float,
        metavar="SECONDS",
        help="end within this time (+10%%): cover what fits, and say what was covered",
    )
    shown = a.add_mutually_exclusive_group()
    shown.add_argument(
        "--progress",
        action="store_true",
        default=None,
        help="progress bars on stderr even when it is not a terminal",
    )
    shown.add_argument("--quiet", action="store_true", help="no progress bars")
    a.add_argument(
        "--json-full",
        action="store_true",
        help="per-position lists in full in the JSON (default: summarized, worst positions)",
    )
    a.add_argument(
        "--device",
        type=_device,
        metavar="DEVICE",
        help="run the model there (cpu, cuda, cuda:1...; a bare cuda under pytest-xdist is "
        "cuda:{worker %% GPUs}); a missing device exits 2; default: where its parameters are",
    )
    _ci_outputs(a)
    m = sub.add_parser(
        "merge",
        help="merge the --json files of an audit's shards",
        description="Merge the --json files of `audit --shard I/N`, one per shard: the verdict, "
        "report and exit code of the unsharded audit.",
    )
    m.add_argument("parts", nargs="+", metavar="PART.json", help="one --json file per shard")
    m.add_argument("--json", metavar="PATH", help="write the merged JSON report here")
    m.add_argument("--json-full", action="store_true", help="per-position lists in full")
    _ci_outputs(m)
    return parser


def _ci_outputs(parser) -> None:
    """The formats CI tools read (properties/output/): SARIF, JUnit, HTML, annotations."""
    parser.add_argument("--sarif", metavar="PATH",
                        help="write a SARIF 2.1.0 log: one result per violated contract, at the "
                        "line where the leak enters")
    parser.add_argument("--junit", metavar="PATH",
                        help="write JUnit XML: one test case per check (per model for zoo)")
    parser.add_argument("--html", metavar="PATH",
                        help="write one self-contained HTML report, pictures embedded (needs "
                        "matplotlib)")
    parser.add_argument("--annotations", choices=("github", "off"), default=None,
                        help="print GitHub ::error annotations at the blamed lines (default: "
                        "when GITHUB_ACTIONS=true)")


def _contract_arguments(a) -> None:
    """The contracts besides causality (properties.contracts), each checked by every evidence."""
    c = a.add_argument_group("contracts besides causality")
    c.add_argument(
        "--documents",
        metavar="SPEC",
        help="packed documents: lengths (5,7,4), ids:0,0,1,..., position_ids:0,1,0,... "
        "(restarting positions, Hugging Face's padding-free packing), cu_seqlens:0,5,12, or "
        "file.py:attr / module:attr naming one; no output may see another document",
    )
    c.add_argument(
        "--documents-as",
        action="append",
        metavar="KEYWORD[=FORM]",
        help="pass the documents to the model as this keyword argument (FORM: ids, "
        "position_ids or cu_seqlens; by default the one its name says); repeatable. A --forward "
        "hook that takes documents= gets them instead",
    )
    c.add_argument(
        "--window",
        type=_positive,
        metavar="W",
        help="no output sees more than W positions, its own included (a sliding window)",
    )
    c.add_argument(
        "--window-exact",
        action="store_true",
        help="and every output sees the far end of its window (a window that shrank fails)",
    )
    c.add_argument(
        "--window-module",
        action="append",
        metavar="PATTERN[=W]",
        help="the window is per module (fnmatch over qualified names, e.g. "
        "'model.layers.*.self_attn'; W: a width or global, default --window): each module is "
        "audited on its own, the model against the bound they compose; repeatable",
    )
    c.add_argument(
        "--batch-independent",
        action="store_true",
        help="no output depends on another sample of the batch (inference, and with --train "
        "training mode)",
    )
    c.add_argument(
        "--padding",
        choices=("left", "right", "both"),
        help="real positions do not change when the sequence is padded (inference, 1D)",
    )
    c.add_argument(
        "--padding-mask",
        default="attention_mask",
        metavar="KEYWORD",
        help="the keyword of the attention mask (1 real, 0 padding; default attention_mask; "
        "none: no mask)",
    )


def _contracts(args) -> dict:
    """make_subject's contract keywords from the command line."""
    return {
        "documents": _documents(args.documents),
        "documents_as": args.documents_as,
        "window": args.window,
        "window_exact": args.window_exact,
        "window_modules": args.window_module,
        "batch_independent": args.batch_independent,
        "padding": args.padding,
        "padding_mask": None if args.padding_mask in ("none", "") else args.padding_mask,
    }


_DOCUMENT_SPEC = re.compile(r"((lengths|ids|position_ids|cu_seqlens):)?[\d,\s]+")


def _documents(spec: str | None):
    """``--documents``: the numbers themselves, or a module attribute that holds them."""
    if spec is None or _DOCUMENT_SPEC.fullmatch(spec):
        return spec
    where, attr = split_target(spec)
    value = resolve_attribute(import_source(where), attr, spec)
    value = value() if callable(value) and not isinstance(value, torch.Tensor) else value
    return value


def _shard(text: str) -> tuple[int, int]:
    index, _, count = text.partition("/")
    try:
        shard = (int(index), int(count))
    except ValueError:
        shard = None
    if shard is None or not 0 <= shard[0] < shard[1]:
        raise argparse.ArgumentTypeError(
            f"expected I/N with 0 <= I < N (e.g. 0/4 for the first of four shards), got {text!r}"
        )
    return shard


def _device(text: str):
    """A device this machine has; a bare ``cuda`` under xdist is planned per worker."""
    from properties import devices

    try:
        return devices.plan(text)
    except devices.DeviceError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _integer(what: str, low: int, high: int | None = None):
    """An argparse type: ``what``, an integer in ``[low, high)``, or a one-line error."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}") from None
        if value < low or (high is not None and value >= high):
            raise argparse.ArgumentTypeError(f"expected {what}, got {value}")
        return value

    return parse


_positive = _integer("a positive integer", 1)


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}") from None
    if not (value > 0 and math.isfinite(value)):
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text}")
    return value


_seed = _integer("an integer seed in [0, 2**32)", 0, 2**32)


def _checks(text: str) -> tuple[str, ...]:
    items = tuple(c.strip() for c in text.split(",") if c.strip())
    unknown = [c for c in items if c not in CHECKS]
    if unknown or not items:
        raise argparse.ArgumentTypeError(
            f"unknown check(s) {', '.join(unknown) or '(none given)'}; "
            f"choose from {','.join(CHECKS)}"
        )
    return items


# ---------------------------------------------------------------------------------------------


def _grid(args) -> tuple[int, ...] | None:
    if args.length:
        return (args.length,)
    if args.shape:
        return tuple(args.shape)
    return None


def _order(spec: str | None, model, n: int):
    if spec in (None, "raster"):
        return None
    if spec in NAMED_ORDERS:
        return spec
    if spec == "reverse":
        return list(range(n - 1, -1, -1))
    if spec.startswith("@"):
        if not hasattr(model, spec[1:]):
            raise UsageError(
                f"the model has no attribute {spec[1:]!r} for --order", "name one it has"
            )
        value = getattr(model, spec[1:])
    else:
        where, attr = split_target(spec)
        value = resolve_attribute(import_source(where), attr, spec)
    fix = (
        "give the positions in generation order: a sequence, a tensor, or a zero-argument "
        "function that returns one"
    )
    try:
        value = value() if callable(value) and not isinstance(value, torch.Tensor) else value
    except Exception as exc:  # the user's function: one line, like a target that fails to build
        raise UsageError(f"--order {spec}: calling it raised {describe(exc)}", fix) from None
    try:
        return torch.as_tensor(value).flatten()
    except Exception:
        raise UsageError(
            f"--order {spec} is a {type(value).__name__}, not a sequence of positions", fix
        ) from None


def _subject(args, target: str):
    grid = _grid(args)
    if grid is None:
        raise UsageError(f"no grid given for {target}", "pass --length T (1D) or --shape H W (2D)")
    model = load_target(target)
    return make_subject(
        model,
        grid=grid,
        layout=args.layout,
        features=args.features,
        vocab=args.vocab,
        output=args.output,
        order=_order(args.order, model, math.prod(grid)),
        predicts=args.predicts,
        name=target,
        forward=_hook(args.forward, "--forward", "(model, x) -> predictions", "all_logits"),
        batch=args.batch,
        step=_hook(args.step, "--step", "(model, chunk, state) -> (predictions, state)", "step"),
        **_contracts(args),
    )


def _hook(spec: str | None, flag: str, signature: str, example: str):
    """A hook named like a target (``--forward``, ``--step``): a callable, or a usage error."""
    if spec is None:
        return None
    where, attr = split_target(spec)
    value = resolve_attribute(import_source(where), attr, spec)
    if not callable(value):
        raise UsageError(
            f"{flag} {spec} is a {type(value).__name__}, not a function",
            f"name a function {signature}, e.g. file.py:{example}",
        )
    return value


def _options(args) -> AuditOptions:
    return AuditOptions(
        checks=None if args.checks is None else tuple(args.checks),
        train=args.train,
        exact=args.exact,
        seed=args.seed,
        max_examples=args.max_examples,
        shard=args.shard,
        memory=args.memory,
        budget=args.budget,
        progress=False if args.quiet else args.progress,
    )


def run_one(args, target: str) -> tuple[dict, str]:
    from properties.extra import steppers, zoo  # noqa: F401 (registers the lecture's steppers)

    declared = None
    if target.startswith("zoo:"):
        name = target[4:]
        subject = zoo.zoo_subject(name, _grid(args), seed=args.seed)
        subject.clauses = contract_clauses(subject, **_contracts(args))
    else:
        subject = _subject(args, target)
    if args.device is not None:
        if subject.module is None:
            raise UsageError(f"--device needs an nn.Module, {target} is not one", "drop --device")
        subject.module.to(args.device)
    result = audit(subject, options=_options(args))
    if target.startswith("zoo:"):
        declared = zoo.compare(zoo.declared_facts(target[4:], subject.grid), result)
    data = to_dict(result, target, declared, full=args.json_full)
    paths = None
    if args.pictures:
        from properties.output import pictures

        paths = [str(p) for p in pictures.draw(result, args.pictures, target=target)]
        data["pictures"] = paths
    if args.shard is not None:
        from properties.auditing import shard_file
        from properties.subject import memory

        with memory.limited(args.memory or memory.DEFAULT_CAP / memory.GIB):
            data["shard_evidence"] = shard_file.dump(result, memory.limit_bytes())
    return data, render_text(result, target, declared, pictures=paths), result


def command_audit(args) -> int:
    from properties.extra import zoo

    if args.pictures or args.html:  # before minutes of auditing, not after
        from properties.output.pictures import require_matplotlib

        require_matplotlib()
    if args.target == "zoo":
        if args.shard is not None:
            raise UsageError("--shard applies to one target, not the whole zoo", "use zoo:NAME")
        if _grid(args):
            raise UsageError("--length/--shape cannot apply to every zoo model", "use zoo:NAME")
        rows, results = [], []
        for name in zoo.names():
            data, text, result = run_one(args, f"zoo:{name}")
            print(text + "\n", flush=True)
            rows.append(data)
            results.append(result)
        print(render_table(rows))
        _write_json(args.json, rows)
        code = 0 if all(r["passed"] for r in rows) else 1
        _write_ci_outputs(args, list(zip(rows, results, strict=True)), code, title="zoo")
        return code
    data, text, result = run_one(args, args.target)
    print(text)
    _write_json(args.json, data)
    code = 0 if data["passed"] else 1
    _write_ci_outputs(args, [(data, result)], code, title=args.target)
    return code


def command_merge(args) -> int:
    """Merge shards' --json files: the unsharded audit's report and exit code."""
    from properties.auditing import shard_file
    from properties.auditing.conclude import merge
    from properties.extra import zoo

    parts, targets, memories, sources = [], set(), set(), []
    for path in args.parts:
        try:
            with open(path) as f:
                data = json.load(f)
        except (OSError, ValueError) as exc:
            raise UsageError(
                f"cannot read {path}: {exc}", "give the --json files of the shards"
            ) from None
        if not isinstance(data, dict) or "shard_evidence" not in data:
            raise UsageError(
                f"{path} is not the --json of an audit run with --shard",
                "run `audit ... --shard I/N --json PART.json` for every I",
            )
        parts.append(shard_file.load(data["shard_evidence"], path))
        targets.add(data["target"])
        sources.append(data.get("model_source"))
        memories.add(data["shard_evidence"]["memory_bytes"])
    counts = {p.shard[1] for p in parts}
    indexes = sorted(p.shard[0] for p in parts)
    if len(targets) > 1 or len(counts) != 1 or indexes != list(range(next(iter(counts)))):
        raise UsageError(
            f"the parts are not the shards 0..N-1 of one audit (targets {sorted(targets)}, "
            f"shards {indexes} of {sorted(counts)})",
            "give exactly one --json file per shard of the same audit",
        )
    if len(memories) > 1:
        raise UsageError(
            "the shards ran with different --memory budgets, so their chunks differ",
            "run every shard with the same --memory",
        )
    target = targets.pop()
    result = merge(parts)
    declared = None
    if target.startswith("zoo:"):
        declared = zoo.compare(zoo.declared_facts(target[4:], result.subject.grid), result)
    data = to_dict(result, target, declared, full=args.json_full)
    data["model_source"] = sources[0]  # the shards had the model; the merge has not
    print(render_text(result, target, declared))
    _write_json(args.json, data)
    code = 0 if data["passed"] else 1
    _write_ci_outputs(args, [(data, result)], code, title=target)
    return code


def _write_json(path: str | None, data) -> None:
    if path:
        _write(path, dumps(data) + "\n", "--json")


def _write(path: str, content: str | bytes, flag: str) -> None:
    try:
        with open(path, "wb" if isinstance(content, bytes) else "w") as f:
            f.write(content)
    except OSError as exc:
        raise UsageError(
            f"cannot write {flag} {path}: {exc.strerror}", "give a writable path"
        ) from None


def _write_ci_outputs(args, entries: list, code: int, *, title: str) -> None:
    """SARIF, JUnit, HTML and GitHub annotations, from the JSON reports (and, for the
    pictures of the HTML report, the results)."""
    from properties.output import annotations

    reports = [data for data, _ in entries]
    if args.sarif:
        from properties.output import sarif

        log = sarif.build(reports, report_uri=args.html or args.json, exit_code=code)
        _write(args.sarif, dumps(log) + "\n", "--sarif")
    if args.junit:
        from properties.output import junit

        _write(args.junit, junit.build(reports), "--junit")
    if args.html:
        from properties.output import html

        pages = [(data, _pictures(data, result)) for data, result in entries]
        _write(args.html, html.render(pages, title=title), "--html")
    if annotations.wanted(args.annotations):
        for line in annotations.commands(reports):
            print(line)


def _pictures(data: dict, result) -> list[tuple[str, bytes]]:
    """The PNG pictures of one audit: those --pictures drew, else drawn for the HTML report."""
    import tempfile
    from pathlib import Path

    from properties.output import pictures

    if data.get("pictures"):
        return [(Path(p).name, Path(p).read_bytes()) for p in data["pictures"]]
    with tempfile.TemporaryDirectory() as tmp:
        paths = pictures.draw(result, tmp, target=data["target"])
        return [(p.name, p.read_bytes()) for p in paths]


def main(argv: Sequence[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
        return command_merge(args) if args.command == "merge" else command_audit(args)
    except BrokenPipeError:  # `audit ... | head`: the reader left; say nothing more
        sys.stderr = open(os.devnull, "w")  # noqa: SIM115 (interpreter exit flushes it)
        sys.stdout = open(os.devnull, "w")  # noqa: SIM115
        return 2  # the report did not reach its reader: no verdict (1 would say "it leaks")
    except AuditError as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return 2
    except Exception as exc:  # a bug of ours: still one line, with a way to get the traceback
        if os.environ.get("CAUSAL_AUDIT_DEBUG"):
            traceback.print_exc()
        print(
            f"{PROG}: internal error: {type(exc).__name__}: {' '.join(str(exc).split())[:300]} "
            "(set CAUSAL_AUDIT_DEBUG=1 for the traceback, and please report it)",
            file=sys.stderr,
        )
        return 2


__all__ = ["main", "build_model", "TargetError"]
