"""The certificate against the forward pass and against today's gradient map, side by side.

    python benchmarks/bench_certificate.py            # all three rows
    python benchmarks/bench_certificate.py --quick    # skip GPT-2 small (minutes on 2 cores)

- GPT-2 small (124M, random weights) at length 1024, ``--checks certificate --predicts next``
  through the CLI: exit code, status, wall time against one forward pass at that length
  (measured in the same process; target <= 10), peak RSS of that process (target <= 4 GB).
- The lecture's dilated net at length 8192 and the PixelCNN at 28x28: the certificate's time
  against the colored gradient map the audit computes (float64 copy, 3 inputs).
"""

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time

import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)  # this checkout's properties, not an installed one
GPT2 = [
    f"{ROOT}/tests/targets/hf_models.py:gpt2_small",
    "--layout", "BT", "--vocab", "50257", "--length", "1024", "--output", "logits",
    "--predicts", "next", "--checks", "certificate",
]


def gpt2_child() -> None:
    """Runs in a fresh process: forward pass, then the CLI; prints one JSON line."""
    sys.path.insert(0, f"{ROOT}/tests/targets")
    import hf_models

    from properties import cli

    model = hf_models.gpt2_small().eval()
    tokens = torch.randint(50257, (1, 1024), generator=torch.Generator().manual_seed(0))
    forwards = []
    with torch.no_grad():
        for _ in range(2):
            start = time.perf_counter()
            model(tokens)
            forwards.append(time.perf_counter() - start)
    del model
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "report.json")
        start = time.perf_counter()
        code = cli.main(["audit", *GPT2, "--json", path])
        wall = time.perf_counter() - start
        with open(path) as f:
            cert = json.load(f)["certificate"]
    print(json.dumps({"code": code, "status": cert["status"], "mode": cert["mode"],
                      "wall": wall, "forward": min(forwards)}))


def gpt2_row() -> dict:
    out = subprocess.run(
        [sys.executable, __file__, "--gpt2-child"], capture_output=True, text=True, cwd=ROOT,
        check=True,
    )
    data = json.loads(out.stdout.strip().splitlines()[-1])
    data["rss_gb"] = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 2**20
    return data


def versus_gradients(name: str, grid) -> dict:
    from properties.evidence import gradients
    from properties.evidence.certificate import certify
    from properties.extra.zoo import zoo_subject
    from properties.subject.calls import float64_copy

    subject = zoo_subject(name, grid)
    certify(zoo_subject("nettoy1d"))  # one-time imports of the dispatch machinery
    start = time.perf_counter()
    cert = certify(subject)
    t_cert = time.perf_counter() - start
    s64, _ = float64_copy(subject)
    x = subject.draw_inputs(3, torch.Generator().manual_seed(7))
    start = time.perf_counter()
    dmap = gradients.colored_map(s64, x)
    t_map = time.perf_counter() - start
    return {"status": cert.status, "cert": t_cert, "map": t_map,
            "exact": cert.exact_for(dmap), "size": cert.receptive_field.size}


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true", help="skip GPT-2 small")
    parser.add_argument("--gpt2-child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.gpt2_child:
        gpt2_child()
        return 0
    ok = True
    print(f"{'model':32} {'status':10} {'certificate':>12} {'baseline':>12} {'ratio':>7}  target")
    if not args.quick:
        g = gpt2_row()
        ratio = g["wall"] / g["forward"]
        good = g["code"] == 0 and g["status"] == "proved" and ratio <= 10 and g["rss_gb"] <= 4
        ok &= good
        print(f"{'GPT-2 small, T=1024 (CLI)':32} {g['status']:10} {g['wall']:11.1f}s "
              f"{g['forward']:10.1f}s fw {ratio:6.1f}x  <= 10 forward passes, exit "
              f"{g['code']}, peak RSS {g['rss_gb']:.2f} GB (<= 4)  {'ok' if good else 'MISSED'}")
    for name, grid, label in [("nettoy1d_dilated", (8192,), "dilated net, T=8192"),
                              ("pixelcnn", (28, 28), "PixelCNN, 28x28")]:
        r = versus_gradients(name, grid)
        ratio = r["cert"] / r["map"]
        print(f"{label:32} {r['status']:10} {r['cert']:11.2f}s {r['map']:10.2f}s map "
              f"{ratio:6.2f}x  (bound exact: {r['exact']}, size {r['size']})")
        ok &= r["status"] == "proved"
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
