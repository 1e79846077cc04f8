"""Per-module mutation scores from mutmut's cached results (run after ``tox -e mutation``).

Killed and timed-out mutants count as killed; the equivalent mutants listed (by name) in
docs/mutation-equivalent.md are left out of both counts; mutants not run yet are reported apart.

    python benchmarks/mutation_score.py            # every module run so far
    python benchmarks/mutation_score.py --survivors properties.evidence.facts
"""

import argparse
import re
import subprocess
import sys
from collections import Counter, defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
EQUIVALENT = ROOT / "docs" / "mutation-equivalent.md"
KILLED = {"killed", "timeout", "segfault"}


def equivalent_names() -> set[str]:
    if not EQUIVALENT.exists():
        return set()
    return set(re.findall(r"`(properties\.[^`]+__mutmut_\d+)`", EQUIVALENT.read_text()))


def results() -> dict[str, str]:
    out = subprocess.run(
        ["mutmut", "results", "--all", "true"], cwd=ROOT, capture_output=True, text=True
    ).stdout
    found = {}
    for line in out.splitlines():
        name, _, status = line.strip().rpartition(": ")
        if "__mutmut_" in name:
            found[name] = status
    return found


def module_of(name: str) -> str:
    return name.split(".x", 1)[0]


def _total(by_module: dict[str, Counter], prefix: str) -> Counter:
    total = Counter()
    for module, counts in by_module.items():
        if module.startswith(prefix):
            total += counts
    return total


def print_table(rows: list[tuple[str, Counter]], markdown: bool) -> None:
    columns = ("killed", "alive", "equivalent", "not run")
    if markdown:
        print("| module | " + " | ".join(columns) + " | score |")
        print("|---" * (len(columns) + 2) + "|")
    else:
        print(f"{'module':40} {'killed':>7} {'alive':>6} {'equiv.':>6} {'not run':>8} {'score':>7}")
    for module, counts in rows:
        run = counts["killed"] + counts["alive"]
        score = f"{100 * counts['killed'] / run:.1f}%" if run else "-"
        values = [str(counts[c]) for c in columns]
        if markdown:
            print(f"| `{module}` | " + " | ".join(values) + f" | {score} |")
        else:
            print(f"{module:40} " + " ".join(f"{v:>7}" for v in values) + f" {score:>7}")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--survivors", metavar="MODULE", help="list the survivors of MODULE")
    parser.add_argument("--markdown", action="store_true", help="a table for README.md")
    args = parser.parse_args(argv)
    equivalent = equivalent_names()
    by_module: dict[str, Counter] = defaultdict(Counter)
    survivors = defaultdict(list)
    for name, status in results().items():
        module = module_of(name)
        if name in equivalent:
            by_module[module]["equivalent"] += 1
        elif status in KILLED:
            by_module[module]["killed"] += 1
        elif status == "not checked":
            by_module[module]["not run"] += 1
        else:
            by_module[module]["alive"] += 1
            survivors[module].append(f"{name}: {status}")
    if args.survivors:
        print("\n".join(survivors[args.survivors]))
        return 0
    rows = sorted(by_module.items())
    # the certificate is one module to its users, spread over a package: one more row for it
    package = "properties.evidence.certificate"
    rows.append((f"{package} (package)", _total(by_module, package)))
    rows.append(("all", _total(by_module, "")))
    print_table(rows, markdown=args.markdown)
    return 0


if __name__ == "__main__":
    sys.exit(main())
