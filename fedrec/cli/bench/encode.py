"""``fedrec bench encode``: item-index build speed and one user's top-10 latency.

Item index: the catalogue's text encoded by the model, as a platform does when it
builds (or rebuilds) its index: tokenisation of every item text, then the backbone's
lower layers and the item tower on top (``LoraEncoder.lower`` + ``TwoTower.item_text``),
in chunks; items/s is the median over chunks. The whole catalogue is encoded in the
configured precision (that index serves the latency part); the other precision (fp32 vs
bf16) is measured on a subset, alternating chunk by chunk with the configured one, so
their ratio comes from the same run.

Recommendation latency: for one user at a time (batch of one), the time from the raw
history to the top-10: the user text's tokens, the user tower's full forward pass, the
scores against the cached index (text and, in hybrid mode, ID term), and the top-k with
the user's history excluded. Reported as p50 / p99 over users, per stage and in total.
The default platform is social, the largest catalogue (17,632 items); the history is the
test-time history (train items plus the valid item).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np

from fedrec.cli.bench.common import (
    base_overrides,
    compose,
    document,
    machine_info,
    median,
    percentile,
    print_table,
    ratio,
    write_result,
)
from fedrec.model.precision import resolve_bf16

NAME = "encode"
STAGES = ("tokenize", "user_tower", "score", "topk", "total")


def run_encode(
    overrides: list[str] | None = None,
    smoke: bool = False,
    out_dir: str | Path = "outputs/bench",
    platform: str = "social",
    users: int | None = None,
    items: int = -1,
    chunk: int | None = None,
    compare_items: int | None = None,
    k: int = 10,
    threads: int | None = None,
    seed: int = 0,
) -> dict[str, Any]:
    """Run the encode benchmark, print its tables and write ``bench_encode.json``.

    Parameters
    ----------
    overrides : list of str, optional
        Extra Hydra overrides (model, data root, ...).
    smoke : bool, default False
        Tiny random BERT, 1 thread, 30 users.
    out_dir : path-like, default "outputs/bench"
        Where the JSON goes.
    platform : str, default "social"
        The platform whose catalogue is encoded and ranked.
    users : int, optional
        Users timed for the latency (default 300; smoke 30), drawn at random.
    items : int, default -1
        Encode only the first N items (-1 = the whole catalogue; the latency then
        ranks those N only).
    chunk : int, optional
        Items per timed chunk (default 1024; smoke 2048).
    compare_items : int, optional
        Items encoded in both precisions for their ratio (default 1024).
    k : int, default 10
        Top-k.
    threads : int, optional
        torch threads (default ``train.threads``; 1 with ``smoke``).
    seed : int, default 0
        Seed of the user sample.

    Returns
    -------
    dict
        The document written to ``<out_dir>/bench_encode.json``.
    """
    import torch

    from fedrec.build import build_encoder, load_datasets
    from fedrec.model.backbone import batches
    from fedrec.model.inputs import TextInputs
    from fedrec.model.two_tower import PlatformHead, TwoTower
    from fedrec.task import recent_ids

    start = time.perf_counter()
    users = users or (30 if smoke else 300)
    chunk = chunk or (2048 if smoke else 1024)
    compare_items = compare_items or 1024
    cfg = compose(base_overrides(smoke, threads, [f"platform={platform}", "train.progress=false", *(overrides or [])]))
    torch.set_num_threads(int(cfg.train.threads))
    machine = machine_info()
    m = cfg.model
    data = load_datasets(cfg)[platform]
    n_items = data.num_items if items < 0 else min(items, data.num_items)
    encoder, tokenizer = build_encoder(m, cfg.seed)
    head = None
    if m.hybrid:  # untrained ID embeddings: the cost of the ID term, not its values, matters here
        with torch.random.fork_rng():
            torch.manual_seed(cfg.seed)
            head = PlatformHead(n_items, int(m.id_dim), float(m.id_init_std))
    model = TwoTower(encoder, head, score=str(m.score), scale=float(m.scale), item_tower=str(m.item_tower)).eval()

    # -- tokenisation of the catalogue (public text) ---------------------------------------
    t0 = time.perf_counter()
    inputs = TextInputs(
        data,
        tokenizer,
        item_max_tokens=int(m.item_max_tokens),
        user_max_tokens=int(m.user_max_tokens),
        user_item_tokens=int(m.user_item_tokens),
        friend_signal=bool(cfg.platforms[platform].friend_signal),
        friend_tokens=int(m.friend_tokens),
    )
    tokenize_seconds = time.perf_counter() - t0

    @torch.no_grad()
    def encode(ids: range, bf16: bool) -> tuple[torch.Tensor, float]:
        encoder.bf16 = bf16
        t = time.perf_counter()
        tok, mask = inputs.items(ids)
        parts = []
        for sl in batches(len(ids), 256):
            hidden = encoder.lower(tok[sl], mask[sl])
            parts.append(model.item_text(hidden, mask[sl]))
        return torch.cat(parts), time.perf_counter() - t

    configured = resolve_bf16(m.bf16)
    # -- precision comparison on a subset, chunks alternating -------------------------------
    sub = range(min(compare_items, n_items))
    encode(range(min(64, n_items)), configured)  # warm-up
    compare: dict[bool, list[float]] = {True: [], False: []}
    for rep in range(3):
        for bf16 in (configured, not configured) if rep % 2 == 0 else (not configured, configured):
            _, sec = encode(sub, bf16)
            compare[bf16].append(len(sub) / sec)
    # -- the whole catalogue, configured precision (the index the latency part uses) -------
    chunks, parts = [], []
    for lo in range(0, n_items, chunk):
        ids = range(lo, min(n_items, lo + chunk))
        vec, sec = encode(ids, configured)
        parts.append(vec)
        chunks.append({"items": len(ids), "seconds": round(sec, 4), "items_per_s": len(ids) / sec})
    encoder.bf16 = configured
    index = torch.cat(parts)
    build_seconds = sum(c["seconds"] for c in chunks)

    # -- one user's top-k -----------------------------------------------------------------
    rng = np.random.default_rng(seed)
    pool = np.arange(data.num_users)
    sample = rng.choice(pool, size=min(users, len(pool)), replace=False).tolist()
    warm = sample[: min(5, len(sample))]
    timings: dict[str, list[float]] = {s: [] for s in STAGES}
    tops = []
    with torch.no_grad():
        for i, u in enumerate(warm + sample):
            hist = data.history(u, "test")
            hist = hist[hist < n_items]
            t_a = time.perf_counter()
            tok, mask = inputs.users([hist], [u])
            t_b = time.perf_counter()
            hidden = encoder.lower(tok, mask)
            hist_ids, hist_mask = recent_ids([hist], int(m.history_ids))
            u_text, u_id = model.user_vectors(hidden, mask, hist_ids, hist_mask)
            t_c = time.perf_counter()
            scores = model.scores(u_text, u_id, index)[0]
            t_d = time.perf_counter()
            scores[torch.as_tensor(hist, dtype=torch.long)] = -torch.inf
            top = torch.topk(scores, min(k, n_items)).indices
            t_e = time.perf_counter()
            if i < len(warm):
                continue
            tops.append(top.tolist())
            for s, v in zip(STAGES, (t_b - t_a, t_c - t_b, t_d - t_c, t_e - t_d, t_e - t_a), strict=True):
                timings[s].append(v * 1000)
    excluded_ok = all(not (set(t) & set(data.history(u, "test").tolist())) for t, u in zip(tops, sample, strict=True))

    latency = {
        s: {"p50_ms": percentile(v, 50), "p99_ms": percentile(v, 99), "mean_ms": float(np.mean(v))}
        for s, v in timings.items()
    }
    name = {True: "bf16", False: "fp32"}
    rows = [
        {
            "stage": "tokenize catalogue",
            "precision": "-",
            "items": data.num_items,
            "items_per_s": ratio(data.num_items, tokenize_seconds),
            "seconds": round(tokenize_seconds, 3),
        },
        {
            "stage": "encode catalogue",
            "precision": name[configured],
            "items": n_items,
            "items_per_s": median(c["items_per_s"] for c in chunks),
            "items_per_s_total": ratio(n_items, build_seconds),
            "seconds": round(build_seconds, 3),
            "chunks": len(chunks),
        },
    ]
    for bf16 in (configured, not configured):
        rows.append(
            {
                "stage": "encode subset",
                "precision": name[bf16],
                "items": len(sub),
                "items_per_s": median(compare[bf16]),
                "repeats": len(compare[bf16]),
            }
        )
    summary = {
        "index_items_per_s": rows[1]["items_per_s"],
        "index_seconds": round(tokenize_seconds + build_seconds, 3),
        "bf16_vs_fp32": ratio(median(compare[True]), median(compare[False])),
        "latency_p50_ms": latency["total"]["p50_ms"],
        "latency_p99_ms": latency["total"]["p99_ms"],
        "catalogue_items": n_items,
        "users_timed": len(sample),
        "history_excluded": excluded_ok,
    }
    settings = {
        "platform": platform,
        "backbone": str(m.backbone),
        "bf16": configured,
        "item_max_tokens": int(m.item_max_tokens),
        "user_max_tokens": int(m.user_max_tokens),
        "hybrid": bool(m.hybrid),
        "item_tower": str(m.item_tower),
        "chunk": chunk,
        "k": k,
        "threads": int(cfg.train.threads),
        "seed": seed,
    }
    doc = document(NAME, machine, smoke, settings, rows, summary, time.perf_counter() - start)
    doc.extra["latency"] = latency
    path = write_result(out_dir, NAME, doc)
    print_table(
        f"fedrec bench encode: item index of {platform} ({n_items:,} items), {m.backbone}",
        ["stage", "precision", "items", "items/s", "seconds"],
        [[r["stage"], r["precision"], r["items"], r["items_per_s"], r.get("seconds", "-")] for r in rows],
        machine,
        [
            f"items/s: encode catalogue = median over {len(chunks)} chunks of {chunk}; encode subset = median of 3 "
            f"repeats, the two precisions alternating; bf16/fp32 = {summary['bf16_vs_fp32']:.2f}",
        ],
    )
    print_table(
        f"fedrec bench encode: one user's top-{k} over {n_items:,} items ({len(sample)} users, batch of one)",
        ["stage", "p50 ms", "p99 ms", "mean ms"],
        [[s, *(f"{latency[s][q]:.2f}" for q in ("p50_ms", "p99_ms", "mean_ms"))] for s in STAGES],
        machine,
        [
            "user_tower: lower layers + adapters + pooling (+ ID vector); score: against the cached index; "
            "topk: history excluded, top-k.",
            f"results: {path}",
        ],
    )
    return doc.to_json()
