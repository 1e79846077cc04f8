"""How many of transformers' causal-LM architectures the certificate proves causal.

    python benchmarks/certificate_coverage.py                  # every architecture, 2 workers
    python benchmarks/certificate_coverage.py llama gpt2 ...   # some of them
    python benchmarks/certificate_coverage.py --json out.json  # one row per architecture

Every model type of ``MODEL_FOR_CAUSAL_LM_MAPPING_NAMES`` is built from its default config,
shrunk to a tiny one (2 to 4 layers, width 64, vocabulary 96, random weights, nothing
downloaded), and run on ``LENGTH`` tokens. Two answers are compared:

- the ground truth, by brute force: each position in turn gets other tokens (3 draws), and an
  output before it that moves by more than the arithmetic's rounding sees the future (float64
  where the model runs in float64: any change counts; float32 otherwise: changes below
  1e-4 of the logits' scale are rounding);
- the certificate (``--checks certificate --predicts next``): ``proved`` or not.

A *false proof* is a non-causal model the certificate proves: the number that must be 0.
Coverage is proved / causal. Models that cannot be built from a tiny config, or whose forward
pass fails, are listed apart and count in neither.
"""

import argparse
import json
import multiprocessing as mp
import os
import sys
import time
import traceback

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)  # this checkout's properties, not an installed one
LENGTH, VOCAB, TIMEOUT = 24, 96, 240

SIZES = {  # config field -> tiny value (only fields the default config has are set)
    "hidden_size": 64, "n_embd": 64, "d_model": 64, "dim": 64, "embed_dim": 64,
    "num_attention_heads": 4, "n_head": 4, "num_heads": 4, "n_heads": 4,
    "decoder_attention_heads": 4, "encoder_attention_heads": 4,
    "num_key_value_heads": 2, "head_dim": 16, "kv_channels": 16,
    "intermediate_size": 64, "n_inner": 64, "ffn_dim": 64, "d_ff": 64, "decoder_ffn_dim": 64,
    "encoder_ffn_dim": 64, "ffn_hidden_size": 64, "moe_intermediate_size": 32,
    "shared_expert_intermediate_size": 32, "expert_intermediate_size": 32,
    "num_experts": 4, "num_local_experts": 4, "n_routed_experts": 4, "moe_num_experts": 4,
    "num_experts_per_tok": 2, "moe_topk": 2, "top_k": 2, "n_group": 1, "topk_group": 1,
    "max_position_embeddings": 64, "n_positions": 64, "max_seq_len": 64,
    "qk_rope_head_dim": 8, "qk_nope_head_dim": 8, "v_head_dim": 16, "qk_head_dim": 16,
    "kv_lora_rank": 16, "q_lora_rank": 32, "index_head_dim": 16, "index_n_heads": 2,
    "index_topk": 8, "linear_key_head_dim": 16, "linear_value_head_dim": 16,
    "linear_num_value_heads": 4, "linear_num_key_heads": 2, "linear_head_dim": 16,
    "linear_num_heads": 4, "mamba_d_state": 8, "mamba_n_heads": 4, "mamba_d_head": 16,
    "mamba_chunk_size": 8, "chunk_size": 8, "state_size": 8, "time_step_rank": 8,
    "rotary_dim": 8, "embedding_size": 64, "attention_hidden_size": 64,
    "swa_num_attention_heads": 4, "swa_head_dim": 16, "num_memory_tokens": 0,
}
LAYER_FIELDS = ("num_hidden_layers", "n_layer", "num_layers", "n_layers", "decoder_layers")


def _layer_lists(cfg, n_old: int) -> dict:
    """Per-layer lists (``layer_types``...), cut to one layer of each kind (at most 4)."""
    lists = {}
    for key, value in vars(cfg).items():
        if isinstance(value, list) and len(value) == n_old and n_old > 1:
            lists[key] = value
    keep, seen = [], set()
    for key in ("layer_types", "layers_block_type", "hybrid_override_pattern", "block_types"):
        if key in lists:
            for i, kind in enumerate(lists[key]):
                if str(kind) not in seen:
                    seen.add(str(kind))
                    keep.append(i)
            break
    keep = (keep or [0, 1])[:4]
    while len(keep) < 2:
        keep.append(keep[-1] + 1 if keep[-1] + 1 < n_old else 0)
    return {key: [value[i] for i in keep] for key, value in lists.items()}, len(keep)


def tiny_config(model_type: str):
    from transformers import CONFIG_MAPPING

    cls = CONFIG_MAPPING[model_type]
    cfg = cls()
    cfg = getattr(cfg, "text_config", None) or cfg  # a multimodal model: its language model
    d = cfg.to_dict()
    kwargs = {k: v for k, v in SIZES.items() if k in d and isinstance(d[k], int)}
    n_old = next((d[k] for k in LAYER_FIELDS if isinstance(d.get(k), int)), 2)
    lists, n_new = _layer_lists(cfg, n_old)
    kwargs.update(lists)
    for k in LAYER_FIELDS:
        if isinstance(d.get(k), int):
            kwargs[k] = n_new
    for k in ("vocab_size",):
        if k in d:
            kwargs[k] = VOCAB
    for k in ("bos_token_id", "eos_token_id", "pad_token_id", "decoder_start_token_id"):
        if isinstance(d.get(k), int):
            kwargs[k] = min(d[k], VOCAB - 1)
    if isinstance(d.get("sliding_window"), int):
        kwargs["sliding_window"] = 8  # shorter than the sequence: the window is exercised
    if isinstance(d.get("first_k_dense_replace"), int):
        kwargs["first_k_dense_replace"] = 1
    d.update(kwargs)
    d.pop("transformers_version", None)
    d.pop("model_type", None)
    out = type(cfg).from_dict(d)
    return out


def build(model_type: str):
    import torch
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    cfg = tiny_config(model_type)
    return AutoModelForCausalLM.from_config(cfg).eval()


def logits(model, tokens):
    import torch

    with torch.no_grad():
        out = model(tokens)
    y = out.logits if hasattr(out, "logits") else out[0]
    return y.reshape(tokens.shape[0], tokens.shape[1], -1)


def ground_truth(model) -> tuple[bool, float, str]:
    """(sees the future, largest future change, dtype used): each position in turn gets three
    other tokens; the outputs before it are compared with the unchanged run."""
    import copy

    import torch

    g = torch.Generator().manual_seed(1)
    x = torch.randint(VOCAB, (1, LENGTH), generator=g)
    dtype = "float64"
    try:
        m = copy.deepcopy(model).double()
        y0 = logits(m, x)
    except Exception:
        m, dtype = model, "float32"
        y0 = logits(m, x)
    scale = float(y0.abs().max()) or 1.0
    tolerance = 0.0 if dtype == "float64" else 1e-4 * scale
    worst = 0.0
    batch = []
    for s in range(1, LENGTH):
        for _ in range(3):
            x2 = x.clone()
            x2[0, s:] = torch.randint(VOCAB, (LENGTH - s,), generator=g)
            batch.append((s, x2))
    for s, x2 in batch:
        y = logits(m, x2)
        change = float((y[0, :s] - y0[0, :s]).abs().max())
        worst = max(worst, change)
    return worst > tolerance, worst, dtype


def audit_one(model_type: str) -> dict:
    import warnings

    import torch

    warnings.filterwarnings("ignore")
    torch.set_num_threads(1)
    from properties import make_subject
    from properties.evidence.certificate import certify

    row = {"model": model_type}
    start = time.perf_counter()
    try:
        model = build(model_type)
        logits(model, torch.zeros(1, LENGTH, dtype=torch.long))
    except Exception as exc:
        row.update(status="build_failed", detail=f"{type(exc).__name__}: {str(exc)[:200]}")
        return row
    try:
        leaks, worst, dtype = ground_truth(model)
    except Exception as exc:
        row.update(status="truth_failed", detail=f"{type(exc).__name__}: {str(exc)[:200]}")
        return row
    row.update(causal=not leaks, future_change=worst, truth_dtype=dtype)
    t0 = time.perf_counter()
    subject = make_subject(model, grid=(LENGTH,), layout="BT", vocab=VOCAB, output="logits",
                           predicts="next")
    cert = certify(subject)
    row.update(certificate=cert.status, mode=cert.mode, reason=cert.reason,
               lost_precision=cert.lost_precision[:6], path_dependent=cert.path_dependent,
               cert_seconds=round(time.perf_counter() - t0, 2),
               seconds=round(time.perf_counter() - start, 2))
    row["status"] = "ok"
    return row


def _worker(jobs, results):
    sys.path.insert(0, ROOT)
    while True:
        name = jobs.get()
        if name is None:
            return
        try:
            row = audit_one(name)
        except Exception as exc:
            row = {"model": name, "status": "crashed",
                   "detail": "".join(traceback.format_exception_only(exc))[:300]}
        results.put(row)


def run_all(names: list[str], workers: int) -> list[dict]:
    ctx = mp.get_context("spawn")
    results = ctx.Queue()
    pending = list(names)
    rows = []
    pool = []  # (process, its job queue, current job, started)

    def start():
        q = ctx.Queue()
        p = ctx.Process(target=_worker, args=(q, results), daemon=True)
        p.start()
        return [p, q, None, 0.0]

    pool = [start() for _ in range(min(workers, len(names)))]
    while pending or any(w[2] for w in pool):
        for w in pool:
            if w[2] is None and pending:
                w[2], w[3] = pending.pop(0), time.time()
                w[1].put(w[2])
        try:
            row = results.get(timeout=1.0)
            for w in pool:
                if w[2] == row["model"]:
                    w[2] = None
            rows.append(row)
            _print_row(row)
        except Exception:
            pass
        for i, w in enumerate(pool):
            if w[2] is not None and time.time() - w[3] > TIMEOUT:
                w[0].kill()
                row = {"model": w[2], "status": "timeout", "detail": f"over {TIMEOUT} s"}
                rows.append(row)
                _print_row(row)
                pool[i] = start()
            elif w[2] is not None and not w[0].is_alive():
                row = {"model": w[2], "status": "crashed", "detail": "worker died"}
                rows.append(row)
                _print_row(row)
                pool[i] = start()
    for w in pool:
        w[1].put(None)
    return rows


def _print_row(row: dict) -> None:
    if row["status"] != "ok":
        print(f"{row['model']:28s} {row['status']}: {row.get('detail', '')[:110]}", flush=True)
        return
    truth = "causal" if row["causal"] else f"LEAKS ({row['future_change']:.2g})"
    why = "" if row["certificate"] == "proved" else f"  {str(row['reason'])[:120]}"
    print(f"{row['model']:28s} {truth:16s} {row['certificate']:11s} {row['cert_seconds']:6.2f}s"
          f"{why}", flush=True)


def summary(rows: list[dict]) -> dict:
    ok = [r for r in rows if r["status"] == "ok"]
    causal = [r for r in ok if r["causal"]]
    proved = [r for r in causal if r["certificate"] == "proved"]
    false = [r["model"] for r in ok if not r["causal"] and r["certificate"] == "proved"]
    return {"architectures": len(rows), "measured": len(ok), "causal": len(causal),
            "proved": len(proved), "coverage": len(proved) / max(1, len(causal)),
            "non_causal": len(ok) - len(causal), "false_proofs": false,
            "not_measured": sorted(r["model"] for r in rows if r["status"] != "ok")}


def main() -> None:
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

    parser = argparse.ArgumentParser()
    parser.add_argument("models", nargs="*")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--json")
    args = parser.parse_args()
    names = args.models or list(MODEL_FOR_CAUSAL_LM_MAPPING_NAMES)
    start = time.time()
    rows = run_all(names, args.workers)
    s = summary(rows)
    print(f"\nproved {s['proved']} of {s['causal']} causal architectures "
          f"({100 * s['coverage']:.1f}%); false proofs on {s['non_causal']} non-causal: "
          f"{len(s['false_proofs'])} {s['false_proofs']}; not measured {len(s['not_measured'])}"
          f" of {s['architectures']}; {time.time() - start:.0f} s")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"summary": s, "rows": sorted(rows, key=lambda r: r["model"])}, f,
                      indent=1)


if __name__ == "__main__":
    main()
