"""Names of mutants to run next, for when a whole ``tox -e mutation`` does not fit the time.

The survivors (not listed as equivalent) and the "no tests" mutants are always named: a test
added since may kill them, and mutmut reruns a cached result only when the mutant is named. Of
the mutants not run yet, a seeded random sample per module is named, so that the scores of
modules too slow to run whole are estimated without bias (mutmut itself runs the fastest
mutants first, which are not a fair sample). Pass the names to mutmut:

    mutmut run --max-children 2 $(python benchmarks/mutation_sample.py --per-module 100)
    python benchmarks/mutation_score.py    # the "not run" column says what the sample left
"""

import argparse
import random
import sys
from collections import defaultdict

from mutation_score import equivalent_names, module_of, results


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--per-module",
        type=int,
        default=100,
        metavar="N",
        help="mutants not run yet to draw per module (default 100)",
    )
    parser.add_argument(
        "--quota",
        action="append",
        default=[],
        metavar="MODULE=N",
        help="another sample size for one module, e.g. properties.evidence.facts=50",
    )
    parser.add_argument("--seed", type=int, default=11)
    args = parser.parse_args(argv)
    quota = {m: int(n) for m, n in (q.split("=") for q in args.quota)}
    found, equivalent = results(), equivalent_names()
    names = [n for n, s in found.items() if s in ("survived", "no tests") and n not in equivalent]
    not_run = defaultdict(list)
    for name, status in found.items():
        if status == "not checked":
            not_run[module_of(name)].append(name)
    rng = random.Random(args.seed)
    for module, pending in sorted(not_run.items()):
        k = min(len(pending), quota.get(module, args.per_module))
        names += rng.sample(sorted(pending), k)
    print("\n".join(names))
    return 0


if __name__ == "__main__":
    sys.exit(main())
