"""The package's shape: the core stands without the lecture, every public module says what it
exports, and every Python snippet of README.md runs."""

import importlib
import os
import pkgutil
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import properties

ROOT = Path(__file__).resolve().parent.parent
# The rooms allowed to load the lecture's models: extra/ (by definition) and nothing else. The
# interfaces (cli, plugin) load extra/ lazily, on the zoo's and the strategies' first use.
LECTURE_ROOMS = ("properties.extra",)


def modules() -> list[str]:
    names = ["properties"]
    for info in pkgutil.walk_packages(properties.__path__, "properties."):
        names.append(info.name)
    return sorted(names)


def core_modules() -> list[str]:
    return [m for m in modules() if not m.startswith(LECTURE_ROOMS) and m != "properties.__main__"]


def test_no_core_module_loads_the_lecture():
    """Each core module imported in a fresh process (forked from one that imported only torch,
    hypothesis and numpy: the package itself is not loaded there) leaves ``causal`` unloaded."""
    script = textwrap.dedent(
        """
        import importlib, json, os, sys
        import hypothesis, numpy, torch  # what every module needs: paid once, before forking
        children = {}
        for name in sys.argv[1:]:
            read, write = os.pipe()
            pid = os.fork()
            if pid == 0:
                os.close(read)
                importlib.import_module(name)
                loaded = sorted(m for m in sys.modules if m == "causal" or m.startswith("causal."))
                os.write(write, json.dumps(loaded).encode())
                os._exit(0)
            os.close(write)
            children[name] = (pid, read)
        found = {}
        for name, (pid, read) in children.items():
            with os.fdopen(read) as pipe:
                found[name] = json.loads(pipe.read() or '["import failed"]')
            os.waitpid(pid, 0)
        print(json.dumps(found))
        """
    )
    names = core_modules()
    assert "properties.auditing.gather" in names and "properties.evidence.certificate" in names
    run = subprocess.run(
        [sys.executable, "-c", script, *names], capture_output=True, text=True, cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)}, timeout=300,
    )
    assert run.returncode == 0, run.stderr
    loaded = {k: v for k, v in __import__("json").loads(run.stdout).items() if v}
    assert loaded == {}, f"core modules that load the lecture: {loaded}"


def test_the_lecture_room_does_load_the_lecture():
    """The positive control of the test above: the same probe sees extra/ load ``causal``."""
    run = subprocess.run(
        [sys.executable, "-c", "import sys, properties.extra.zoo; print('causal' in sys.modules)"],
        capture_output=True, text=True, cwd=ROOT, timeout=120,
    )
    assert run.stdout.strip() == "True", run.stderr


@pytest.mark.parametrize("name", [m for m in modules() if not m.endswith("__main__")])
def test_every_public_module_lists_its_exports(name):
    """``__all__`` names what a module offers, and every name in it exists; private modules
    (the certificate's rules and tracer, whose names start with an underscore or which only the
    certificate imports) are exempt."""
    private = name.startswith("properties.evidence.certificate.")
    module = importlib.import_module(name)
    if private and not hasattr(module, "__all__"):
        return
    assert hasattr(module, "__all__"), f"{name} has no __all__"
    missing = [n for n in module.__all__ if not hasattr(module, n)]
    assert missing == [], f"{name}.__all__ names what it does not define: {missing}"


def test_the_api_the_readme_names_exists():
    """No module/function clash: ``properties.audit`` is the function, ``properties.merge``
    merges shards, and the rooms are packages."""
    assert callable(properties.audit) and callable(properties.merge)
    assert properties.merge.__module__ == "properties.auditing.conclude"
    assert not hasattr(properties.audit, "__path__")
    for name in properties.__all__:
        assert getattr(properties, name) is not None


# ---------------------------------------------------------------------------------------------
# README.md's Python snippets


def readme_snippets() -> list[tuple[int, str]]:
    """``(line, code)`` of every ```python block in README.md."""
    text = (ROOT / "README.md").read_text()
    found = []
    for match in re.finditer(r"^```python\n(.*?)^```", text, flags=re.S | re.M):
        found.append((text[: match.start()].count("\n") + 1, match.group(1)))
    return found


def test_the_readme_has_python_snippets():
    assert len(readme_snippets()) >= 4


def test_readme_snippets_run_in_order():
    """The snippets run as written, top to bottom in one namespace (as a reader types them: the
    later ones use the model the first defines); a snippet that defines tests gets them called,
    once per parameter."""
    namespace: dict = {"__name__": "readme"}
    for line, code in readme_snippets():
        exec(compile(code, f"README.md:{line}", "exec"), namespace)
        for name, value in [(n, v) for n, v in namespace.items() if n.startswith("test_")]:
            for kwargs in _parameters(value):
                value(**kwargs)
            del namespace[name]


def _parameters(test) -> list[dict]:
    """The keyword sets a (possibly parametrized) test function is called with."""
    marks = [m for m in getattr(test, "pytestmark", []) if m.name == "parametrize"]
    if not marks:
        return [{}]
    argname, values = marks[0].args
    return [{argname: getattr(v, "values", (v,))[0]} for v in values]


def test_the_design_map_names_every_module_of_every_room():
    """docs/DESIGN.md's map is where a newcomer starts: a module it does not name is a room
    nobody can find (the certificate's own modules are named in its package docstring)."""
    text = (ROOT / "docs" / "DESIGN.md").read_text()
    block = text.split("## The map of the package", 1)[1].split("```")[1]
    named = set(re.findall(r"[a-z_]+\.py", block))
    missing = [
        m for m in modules()
        if not m.startswith("properties.evidence.certificate.")
        and m.rsplit(".", 1)[-1] not in ("__init__", "__main__", "properties")
        and m.rsplit(".", 1)[-1] + ".py" not in named
        and importlib.util.find_spec(m).submodule_search_locations is None  # a package: a room
    ]
    assert not missing, f"docs/DESIGN.md's map does not name {missing}"
