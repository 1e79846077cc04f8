"""A quick screen of named mutants against a few fast test files, in one process.

mutmut runs each mutant in a fresh fork against every test that covers it; on a busy machine a
survivor then takes minutes. This screen regenerates the mutants of the modules named from the
current sources (in a temporary copy of mutmut's ``mutants/``, whose cached results it leaves
alone), collects the given test files once, and for each mutant sets ``MUTANT_UNDER_TEST`` and
runs those tests until one fails (or takes more than ``--timeout`` seconds: killed, as mutmut
counts a timeout). A mutant killed here is killed; one reported as surviving may still be killed
by a test outside the files given, which only mutmut's own run tells. Equivalent mutants
(docs/mutation-equivalent.md) are counted apart.

    python benchmarks/mutant_screen.py "properties.evidence.gradients.x_colored_map__*" \\
        --tests tests/evidence/gradients/test_map_paths.py
"""

import argparse
import fnmatch
import os
import re
import shutil
import signal
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))
from mutation_score import equivalent_names  # noqa: E402


class Timeout(Exception):
    pass


def regenerate(workdir: Path, modules: set[str]) -> dict[str, list[str]]:
    """Fresh mutants of ``modules`` (``properties.evidence.facts``) in ``workdir``; their names."""
    from mutmut.mutation.file_mutation import mutate_file_contents

    names = {}
    for module in sorted(modules):
        relative = module.replace(".", "/") + ".py"
        code = (ROOT / relative).read_text()
        mutated = mutate_file_contents(relative, code)
        source = getattr(mutated, "source", None) or mutated.code
        (workdir / relative).write_text(source)
        found = re.findall(r"^\s*def (x\S*?__mutmut_\d+)\(", source, re.M)
        names[module] = [f"{module}.{name}" for name in found]
    return names


class Screen:
    """A pytest plugin that replaces the test loop by the mutant loop."""

    def __init__(self, mutants: list[str], timeout: float, log):
        self.mutants, self.timeout, self.log = mutants, timeout, log
        self.survivors: list[str] = []

    def pytest_runtestloop(self, session):
        from _pytest.runner import runtestprotocol

        def run(item) -> bool:  # whether the item failed (an error or a timeout too)
            signal.alarm(int(self.timeout))
            try:
                return any(r.failed for r in runtestprotocol(item, log=False, nextitem=None))
            except Timeout:
                return True
            finally:
                signal.alarm(0)

        def alarm(*_):
            raise Timeout()

        signal.signal(signal.SIGALRM, alarm)
        os.environ["MUTANT_UNDER_TEST"] = ""
        seconds = {}
        for item in session.items:
            start = time.perf_counter()
            if run(item):
                raise SystemExit(f"{item.nodeid} fails without a mutant: fix it first")
            seconds[item.nodeid] = time.perf_counter() - start
        items = sorted(session.items, key=lambda it: seconds[it.nodeid])  # fast kills first
        start = time.perf_counter()
        for k, name in enumerate(self.mutants, 1):
            os.environ["MUTANT_UNDER_TEST"] = name
            if not any(run(item) for item in items):
                self.survivors.append(name)
                print(f"survived {name}", file=self.log, flush=True)
            if k % 25 == 0:
                done = f"{k}/{len(self.mutants)}, {len(self.survivors)} survived"
                print(f"{done}, {time.perf_counter() - start:.0f} s", file=self.log, flush=True)
        os.environ["MUTANT_UNDER_TEST"] = ""
        return True


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("patterns", nargs="+", help="mutant names, globs allowed")
    parser.add_argument("--tests", nargs="+", required=True, help="test files or node ids")
    parser.add_argument("--timeout", type=float, default=30.0, help="seconds per test")
    args = parser.parse_args()
    if not (ROOT / "mutants").is_dir():
        raise SystemExit("no mutants/ here: run mutmut once (or copy a snapshot's) first")
    modules = {".".join(p.split(".")[:2]) for p in args.patterns}
    equivalent = equivalent_names()
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp) / "mutants"
        shutil.copytree(ROOT / "mutants", workdir)
        shutil.copytree(ROOT / "tests", workdir / "tests", dirs_exist_ok=True)
        names = regenerate(workdir, modules)
        chosen = []
        for pattern in args.patterns:  # in the order given
            for name in names[".".join(pattern.split(".")[:2])]:
                if fnmatch.fnmatch(name, pattern) and name not in chosen:
                    chosen.append(name)
        screened = [n for n in chosen if n not in equivalent]
        print(f"{len(chosen)} mutants, {len(chosen) - len(screened)} listed equivalent")
        os.chdir(workdir)
        sys.path.insert(0, str(workdir))
        os.environ.setdefault("HYPOTHESIS_PROFILE", "mutation")
        import pytest

        screen = Screen(screened, args.timeout, sys.stdout)
        options = ["-q", "-p", "no:randomly", "-p", "no:cacheprovider", "-n", "0"]
        pytest.main([*args.tests, *options], plugins=[screen])
        killed = len(screened) - len(screen.survivors)
        score = 100 * killed / max(1, len(screened))
        print(f"killed {killed} of {len(screened)} ({score:.1f}%) with {' '.join(args.tests)}")


if __name__ == "__main__":
    main()
