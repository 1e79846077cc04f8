"""The CI formats on the command line (``--sarif``, ``--junit``, ``--html``, ``--annotations``,
GitHub Actions' environment) for one target, the zoo and merged shards; and devices: a device
that is asked for and missing exits 2 with one line, on the command line and in pytest."""

import json
import xml.etree.ElementTree as ET

import pytest
import torch
from paths import TARGETS

from properties import assert_causal, cli

LEAKY = [f"{TARGETS / 'leaky.py'}:same_padding", "--layout", "BCT->BCT", "--length", "12"]
EXAMPLES = ["--max-examples", "5", "--quiet"]

pytest_plugins = ["pytester"]


def outputs(tmp_path) -> dict:
    return {flag: tmp_path / name for flag, name in
            (("--sarif", "a.sarif"), ("--junit", "a.xml"), ("--html", "a.html"),
             ("--json", "a.json"))}


def argv_of(paths: dict) -> list[str]:
    return [x for flag, path in paths.items() for x in (flag, str(path))]


def test_a_leak_writes_every_format_and_they_agree(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("GITHUB_ACTIONS", raising=False)
    paths = outputs(tmp_path)
    assert cli.main(["audit", *LEAKY, *EXAMPLES, *argv_of(paths)]) == 1
    out = capsys.readouterr().out
    assert "::error" not in out  # not in GitHub Actions, not asked
    data = json.loads(paths["--json"].read_text())
    log = json.loads(paths["--sarif"].read_text())
    (result, *_) = log["runs"][0]["results"]
    assert result["locations"][0]["physicalLocation"]["region"]["startLine"] == \
        data["blame"]["future"]["line"]
    assert str(paths["--html"]) in result["message"]["text"]  # the link to the report
    failure = ET.parse(paths["--junit"]).getroot().find(".//testcase[@name='causality']/failure")
    assert failure.text == data["failure"]
    page = paths["--html"].read_text()
    assert "data:image/png;base64," in page and data["blame"]["future"]["code"] in page
    # the text report names the line too
    assert "the future enters at properties/extra/architectures.py:" in out


def test_the_junit_failure_is_the_plugins_assertion(tmp_path, capsys):
    junit = tmp_path / "a.xml"
    cli.main(["audit", *LEAKY, *EXAMPLES, "--junit", str(junit)])
    capsys.readouterr()
    from leaky import same_padding

    with pytest.raises(AssertionError) as raised:
        assert_causal(same_padding(), grid=(12,), layout="BCT->BCT", max_examples=5)
    failure = ET.parse(junit).getroot().find(".//failure")
    assert failure.text == str(raised.value)


def test_annotations_in_github_actions_and_off_when_asked(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("GITHUB_ACTIONS", "true")
    cli.main(["audit", *LEAKY, *EXAMPLES])
    errors = [line for line in capsys.readouterr().out.splitlines() if line.startswith("::")]
    assert len(errors) == 2 and errors[0].startswith("::error file=properties/extra/")
    cli.main(["audit", *LEAKY, *EXAMPLES, "--annotations", "off"])
    assert "::error" not in capsys.readouterr().out


def test_the_zoo_is_one_suite_per_model(tmp_path, capsys, monkeypatch):
    from properties.extra import zoo

    monkeypatch.setattr(zoo, "names", lambda: ["nettoy1d", "nettoy1d_dilated"])
    junit = tmp_path / "zoo.xml"
    code = cli.main(["audit", "zoo", "--checks", "causality,receptive_field", *EXAMPLES,
                     "--junit", str(junit), "--sarif", str(tmp_path / "zoo.sarif")])
    assert code == 0
    suites = ET.parse(junit).getroot().findall("testsuite")
    assert [s.get("name") for s in suites] == ["zoo:nettoy1d", "zoo:nettoy1d_dilated"]
    assert all([c.get("name") for c in s] == ["causality", "receptive_field"]
               for s in (x.findall("testcase") for x in suites))
    assert json.loads((tmp_path / "zoo.sarif").read_text())["runs"][0]["results"] == []


def test_merged_shards_keep_the_certificates_blame(tmp_path, capsys):
    parts = [tmp_path / f"part{i}.json" for i in range(2)]
    for i, part in enumerate(parts):
        cli.main(["audit", *LEAKY, *EXAMPLES, "--shard", f"{i}/2", "--json", str(part)])
    sarif = tmp_path / "merged.sarif"
    assert cli.main(["merge", *map(str, parts), "--sarif", str(sarif)]) == 1
    result = json.loads(sarif.read_text())["runs"][0]["results"][0]
    assert result["properties"]["module"] == "layers.1"


@pytest.mark.parametrize("device", ["cuda:99", "mps", "tpu"])
def test_a_missing_device_exits_2_with_one_line(device, capsys):
    if device == "mps" and torch.backends.mps.is_available():
        pytest.skip("this machine has MPS")
    assert cli.main(["audit", *LEAKY, "--device", device]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and device.split(":")[0] in lines[0], lines


def test_the_cpu_is_a_device_like_any(capsys):
    assert cli.main(["audit", *LEAKY, *EXAMPLES, "--device", "cpu", "--checks", "certificate"]) \
        == 1


def test_the_plugin_stops_the_run_on_a_missing_device(pytester):
    pytester.makepyfile(test_one="def test_one():\n    pass\n")
    result = pytester.runpytest_subprocess("--causal-device", "cuda:99")
    assert result.ret == 2
    lines = [line for line in result.stderr.lines + result.stdout.lines if "cuda:99" in line]
    assert len(lines) == 1 and "causal-audit: --causal-device" in lines[0]
    result.stdout.no_fnmatch_line("*passed*")  # never a run on the CPU, never a skip
