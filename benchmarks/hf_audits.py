"""What the real-size benchmarks share: a Hugging Face model of tests/targets/hf_models.py
audited through the CLI in its own process (peak RSS read from the kernel), and one batch-1
forward pass of it, timed in this process with the same threads."""

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests" / "targets"))
sys.path.insert(0, str(ROOT))

import hf_models  # noqa: E402


def forward_seconds(name: str, length: int, vocab: int) -> float:
    """One batch-1 forward pass of the model at ``length``, best of three."""
    model = getattr(hf_models, name)().eval()
    x = torch.randint(vocab, (1, length))
    best = float("inf")
    with torch.no_grad():
        model(x)
        for _ in range(3):
            start = time.perf_counter()
            model(x)
            best = min(best, time.perf_counter() - start)
    return best


def run_audit(name: str, length: int, vocab: int, extra: list[str]) -> dict:
    """``python -m properties audit`` of the model (next-token logits): exit code, wall time,
    peak RSS, the JSON report, the text, the last line of stderr."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "report.json"
        argv = [
            sys.executable, "-m", "properties", "audit",
            f"tests/targets/hf_models.py:{name}", "--layout", "BT", "--vocab", str(vocab),
            "--length", str(length), "--output", "logits", "--predicts", "next", "--quiet",
            "--json", str(out), *extra,
        ]  # fmt: skip
        start = time.perf_counter()
        with open(Path(tmp) / "out", "w+b") as stdout, open(Path(tmp) / "err", "w+b") as stderr:
            child = subprocess.Popen(argv, cwd=ROOT, stdout=stdout, stderr=stderr)
            _, status, usage = os.wait4(child.pid, 0)  # the child's own peak RSS
            wall = time.perf_counter() - start
            stdout.seek(0)
            stderr.seek(0)
            text, err = stdout.read().decode(), stderr.read().decode().strip()
        data = json.loads(out.read_text()) if out.exists() else None
    return {
        "code": os.waitstatus_to_exitcode(status),
        "wall": wall,
        "rss_gb": usage.ru_maxrss * 1024 / 2**30,
        "data": data or {},
        "text": text,
        "error": err.splitlines()[-1] if err else "",
    }
