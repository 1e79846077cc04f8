"""The certificate at long lengths, where only the run form of summaries fits: time and the largest
tensor any op creates (the tracer's own included), per length, for a small decoder (embedding,
dilated causal convolution, causal SDPA, head) and the lecture's dilated net.

    python benchmarks/bench_certificate_long.py                        # this checkout
    python benchmarks/bench_certificate_long.py --root ../cert-scale   # another checkout's code

``--root`` imports ``properties`` from another checkout (a branch's worktree), so that two
branches are measured by the same script, one after the other, on the same machine: the merge of
two branches keeps the cost when its rows match the branch it started from. Times are the
median and the best of ``--repeat`` warm runs (the first run of each case, with its one-time
costs, is dropped; on a shared machine the best is the steadier of the two). "largest/N" is
the largest tensor in bytes per position: linear in the length means a constant column (a
dense ``N x N`` summary would be ``N`` bytes per position).
"""

import argparse
import os
import statistics
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", default=ROOT, help="the checkout whose properties to measure")
    parser.add_argument("--lengths", default="4096,8192,16384")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    sys.path.insert(0, os.path.abspath(args.root))
    import torch
    import torch.nn.functional as F
    from torch import nn

    from properties import make_subject
    from properties.evidence.certificate import certify
    from properties.extra.zoo import zoo_subject
    from properties.subject import memory

    class Decoder(nn.Module):
        def __init__(self, vocab=11, width=8):
            super().__init__()
            torch.manual_seed(0)
            self.emb = nn.Embedding(vocab, width)
            self.conv = nn.Conv1d(width, width, 3, dilation=2)
            self.head = nn.Linear(width, vocab)

        def forward(self, tokens):
            h = self.emb(tokens).transpose(1, 2)
            h = self.conv(F.pad(h, (4, 0))).transpose(1, 2)
            q = h.unsqueeze(1).contiguous()
            a = F.scaled_dot_product_attention(q, q, q, is_causal=True).squeeze(1)
            return self.head(h + a)

    def decoder(n):
        return make_subject(Decoder(), grid=(n,), vocab=11, layout="BT", predicts="next")

    certify(decoder(8))  # one-time imports of the dispatch machinery
    print(f"root {os.path.abspath(args.root)}")
    print(f"{'model':18} {'N':>6} {'form':5} {'status':10} {'median s':>8} {'best s':>8} "
          f"{'largest/N':>10}")
    cases = [("decoder", decoder), ("dilated net", lambda n: zoo_subject("nettoy1d_dilated", (n,)))]
    for label, make in cases:
        for n in [int(x) for x in args.lengths.split(",")]:
            subject = make(n)
            certify(subject)  # warm
            times = []
            for _ in range(args.repeat):
                start = time.perf_counter()
                cert = certify(subject)
                times.append(time.perf_counter() - start)
            tally = getattr(memory, "_tally", memory._Tally)()  # (older checkouts: _Tally)
            with tally:
                certify(subject)
            form = "dense" if isinstance(cert.bound, torch.Tensor) else "runs"
            print(f"{label:18} {n:6d} {form:5} {cert.status:10} {statistics.median(times):8.3f} "
                  f"{min(times):8.3f} {tally.largest / n:10.0f}")


if __name__ == "__main__":
    main()
