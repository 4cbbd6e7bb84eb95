"""The sequence model federated vs each platform alone, per seed, and the Markdown table of it.

``run`` trains, for every seed, the federation (in process: the clients and server of
``fedrec.federated.local.run_local``, the code the Flower apps run) and the local-only models
at the same compute (``fedrec.federated.compare.local_only``), and appends one JSON line per
seed to ``--out``. ``report`` renders the lines as mean ± std tables (PROTOCOL.md: test
NDCG@10), one per tag.

    FEDREC_DATA=../shared/datasets python simulations/seqrec_compare.py run --tag default --seeds 0 1 2
    FEDREC_DATA=../shared/datasets python simulations/seqrec_compare.py run --tag video10 --seeds 0 1 2 \\
        platforms.video.user_fraction=0.1
    python simulations/seqrec_compare.py report outputs/seqrec_compare.jsonl
    python simulations/seqrec_compare.py privacy --reference nonprivate --tags dp_eps8 dp_eps1 runs.jsonl
    python simulations/seqrec_compare.py select --tags lr_a lr_b -- runs.jsonl

Each run also records each platform's valid metrics at the served round (``fed_valid``):
hyper-parameters are chosen on them with ``select``, never on test.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import numpy as np

KEYS = ("NDCG@10", "personal-NDCG@10", "shared-NDCG@10", "prior-weight", "HR@10")


def _pick(metrics: dict) -> dict:
    return {k: metrics[k] for k in KEYS if k in metrics}


def _valid_at_best(doc: dict) -> dict:
    """Each platform's shared part on its full valid split at the served (best) round, from its local report.

    The rounds' evaluations score the shared part (the personal model and the prior are
    fitted after the last round), so these are the shared part's metrics, recorded as
    ``shared-<metric>``. A DP run withholds them from the server; the operator of this
    simulation runs every platform and reads them where each client recorded them (the
    same place ``merge_local_reports`` reads the test metrics from). Hyper-parameters of
    the shared part are chosen on these.
    """
    from fedrec.federated.replies import local_report

    fed, root = doc["federation"], doc["config"]["federation"]["client_state_dir"]
    out = {}
    for p in doc["platforms"]:
        valid = local_report(root, fed["run_key"], p).read()["valid"][str(fed["best_round"])]
        out[p] = {f"shared-{k}": v for k, v in valid.items() if k in KEYS}
    return out


def run(tag: str, seeds: list[int], overrides: list[str], out: Path, local: bool = True) -> None:
    """Train and record the federation and (``local``) the local-only models for each seed."""
    from fedrec.config import compose_config
    from fedrec.federated.compare import local_only
    from fedrec.federated.local import run_local

    for seed in seeds:
        cfg = compose_config(["train.progress=false", *overrides, f"seed={seed}"], command="simulate")
        rec: dict = {"tag": tag, "seed": seed, "over": overrides}
        t = time.time()
        with tempfile.TemporaryDirectory() as run_dir:
            doc = run_local(cfg, run_dir)
            rec["fed_valid"] = _valid_at_best(doc)
        rec["fed"] = {p: _pick(v["test"]) for p, v in doc["platforms"].items()}
        rec["best_round"] = doc["federation"].get("best_round")
        priv = doc.get("privacy") or {}
        if priv:  # what each platform's ledger reports, and the mechanism
            rec["privacy"] = {k: priv.get(k) for k in ("epsilon", "noise_multiplier", "sample_rate", "accountant")}
        rec["fed_seconds"] = round(time.time() - t)
        if local:
            t = time.time()
            lo = local_only(cfg)
            rec["local"] = {p: _pick(v["test"]) for p, v in lo["models"].items()}
            rec["transfer"] = {a: {p: m["NDCG@10"] for p, m in r.items()} for a, r in lo["transfer"]["metrics"].items()}
            rec["local_seconds"] = round(time.time() - t)
        print(json.dumps(rec), flush=True)
        out.parent.mkdir(parents=True, exist_ok=True)
        with out.open("a") as f:
            f.write(json.dumps(rec) + "\n")


def _ms(values: list[float]) -> str:
    if not values:
        return "-"
    if len(values) == 1:
        return f"{values[0]:.4f}"
    return f"{np.mean(values):.4f} ± {np.std(values, ddof=1):.4f}"


def _col(recs: list[dict], side: str, platform: str, key: str) -> list[float]:
    return [r[side][platform][key] for r in recs if side in r and key in r[side].get(platform, {})]


def report(path: Path) -> str:
    """Mean ± std (sample std over seeds) of each tag's runs, per platform; the gain of federating."""
    runs: dict[str, list[dict]] = defaultdict(list)
    for line in path.read_text().splitlines():
        if line.strip():
            rec = json.loads(line)
            runs[rec["tag"]].append(rec)
    out = []
    for tag, recs in runs.items():
        seeds = sorted({r.get("seed", 0) for r in recs})
        out.append(
            f"### {tag} (seeds {', '.join(map(str, seeds))}; overrides: {' '.join(recs[0]['over']) or 'none'})\n"
        )
        out.append(
            "| platform | federated (served) | local-only (served) | gain | federated shared part | "
            "local shared part | federated personal (no prior) | local personal (no prior) |"
        )
        out.append("|---|---|---|---|---|---|---|---|")
        for p in recs[0]["fed"]:
            fed, loc = _col(recs, "fed", p, "NDCG@10"), _col(recs, "local", p, "NDCG@10")
            gain = f"{(np.mean(fed) / np.mean(loc) - 1) * 100:+.1f}%" if fed and loc else "-"
            parts = [
                _ms(_col(recs, side, p, f"{part}-NDCG@10"))
                for part in ("shared", "personal")
                for side in ("fed", "local")
            ]
            out.append(f"| {p} | {_ms(fed)} | {_ms(loc)} | {gain} | {' | '.join(parts)} |")
        secs = [r.get("fed_seconds", 0) + r.get("local_seconds", 0) for r in recs]
        wall = np.mean(secs)
        out.append(f"\n{len(recs)} run(s), {wall:.0f} s of wall time each (federation + local-only, as loaded).\n")
    return "\n".join(out)


def _runs(paths: list[Path]) -> dict[str, list[dict]]:
    runs: dict[str, list[dict]] = defaultdict(list)
    for path in paths:
        for line in path.read_text().splitlines():
            if line.strip():
                rec = json.loads(line)
                runs[rec["tag"]].append(rec)
    return runs


def privacy_report(paths: list[Path], reference: str, tags: list[str]) -> str:
    """DP runs against the non-private ``reference`` tag: served model and shared part, mean ± std and ratio.

    One row per tag (its epsilon and mechanism as each platform's ledger reported them),
    then the reference's local-only models, the bar a DP federation has to clear.
    """
    runs = _runs(paths)
    ref = runs[reference]
    platforms = list(ref[0]["fed"])
    head = [f"{p} served" for p in platforms] + [f"{p} shared part" for p in platforms]
    out = ["| setting | seeds | epsilon (ledger) | " + " | ".join(head) + " |", "|---|---|---|" + "---|" * len(head)]

    def cells(recs: list[dict], side: str, ratio: bool) -> list[str]:
        row = []
        for key in ("NDCG@10", "shared-NDCG@10"):
            for p in platforms:
                v, base = _col(recs, side, p, key), _col(ref, "fed", p, key)
                share = f" ({np.mean(v) / np.mean(base):.0%})" if ratio and v and base else ""
                row.append(_ms(v) + share)
        return row

    for tag in [reference, *tags]:
        recs = runs[tag]
        priv = [r.get("privacy") or {} for r in recs]
        eps = sorted({round(e, 3) for p in priv for e in p.get("epsilon", {}).values()})
        sigma = sorted({round(x, 3) for p in priv for x in p.get("noise_multiplier", {}).values()})
        mech = f"{', '.join(map(str, eps))} (σ {', '.join(map(str, sigma))})" if eps else "non-private"
        seeds = ", ".join(str(r["seed"]) for r in recs)
        out.append(f"| {tag} | {seeds} | {mech} | " + " | ".join(cells(recs, "fed", tag != reference)) + " |")
    seeds = ", ".join(str(r["seed"]) for r in ref)
    out.append(f"| {reference}: local-only | {seeds} | non-private | " + " | ".join(cells(ref, "local", False)) + " |")
    return "\n".join(out)


def select(paths: list[Path], tags: list[str], key: str) -> str:
    """The tags ranked by macro-mean (over platforms) valid ``key``, mean over their seeds; test shown beside.

    The choice is the first row; test columns are printed only to report it, not to choose.
    """
    runs = _runs(paths)
    rows = []
    for tag in tags:
        recs = [r for r in runs[tag] if "fed_valid" in r]
        if not recs:
            raise SystemExit(f"tag {tag!r} has no valid metrics (recorded before they were): run it again")
        platforms = list(recs[0]["fed_valid"])
        valid = {p: float(np.mean([r["fed_valid"][p][key] for r in recs])) for p in platforms}
        test = {p: float(np.mean([r["fed"][p][key] for r in recs])) for p in platforms}
        seeds = ", ".join(str(r["seed"]) for r in recs)
        rows.append((float(np.mean(list(valid.values()))), tag, seeds, valid, test))
    rows.sort(key=lambda r: -r[0])
    platforms = list(rows[0][3])
    out = [
        f"Ranked by macro valid {key} (mean over seeds); test beside it, not used to choose.\n",
        "| tag | seeds | macro valid | "
        + " | ".join(f"{p} valid" for p in platforms)
        + " | "
        + " | ".join(f"{p} test" for p in platforms)
        + " |",
        "|---|---|---|" + "---|" * (2 * len(platforms)),
    ]
    for macro, tag, seeds, valid, test in rows:
        cells = [f"{valid[p]:.4f}" for p in platforms] + [f"{test[p]:.4f}" for p in platforms]
        out.append(f"| {tag} | {seeds} | {macro:.4f} | " + " | ".join(cells) + " |")
    return "\n".join(out)


def sweep_plot(paths: list[Path], reference: str, tags: list[str], out: Path) -> Path:
    """PNG: epsilon (log axis; clip-only at the right end) vs test NDCG@10, served model and shared part.

    One panel per part; per platform a line over ``tags`` (mean over each tag's seeds, the
    ledger's epsilon), the non-private ``reference`` federation dashed.
    """
    from fedrec.cli.report.common import pyplot, save_png

    plt = pyplot()
    runs = _runs(paths)
    ref = runs[reference]
    platforms = list(ref[0]["fed"])

    def eps(tag: str) -> float:
        vals = [e for r in runs[tag] for e in (r.get("privacy") or {}).get("epsilon", {}).values()]
        if not vals:
            raise SystemExit(f"tag {tag!r} has no ledger epsilon: not a DP run")
        return float(np.mean(vals))  # inf for clipping only

    points = sorted((eps(t), t) for t in tags)
    finite = [e for e, _ in points if np.isfinite(e)]
    inf_x = max(finite) * 4 if finite else 1.0
    xs = [e if np.isfinite(e) else inf_x for e, _ in points]
    fig, axes = plt.subplots(1, 2, figsize=(10, 4), sharex=True)
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for ax, key, title in zip(axes, ("NDCG@10", "shared-NDCG@10"), ("served model", "shared part alone"), strict=True):
        for i, p in enumerate(platforms):
            c = colors[i % len(colors)]
            cols = [_col(runs[t], "fed", p, key) for _, t in points]
            ys = [np.mean(v) for v in cols]
            err = [np.std(v, ddof=1) if len(v) > 1 else 0.0 for v in cols]
            ax.errorbar(xs, ys, yerr=err, fmt="o-", color=c, capsize=3, label=f"{p} (DP)")
            ax.axhline(np.mean(_col(ref, "fed", p, key)), color=c, ls="--", lw=1, label=f"{p} non-private")
        ax.set_xscale("log")
        ax.set_xticks(xs)
        ax.set_xticklabels([f"{e:.2g}" if np.isfinite(e) else "inf\n(clip)" for e, _ in points])
        ax.minorticks_off()
        ax.set_xlabel("epsilon per platform (ledger, user level, delta 1e-5)")
        ax.set_title(f"{title}: test NDCG@10")
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("test NDCG@10")
    axes[1].legend(fontsize=7, ncol=2, loc="best")
    fig.tight_layout()
    return save_png(fig, out)


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run")
    r.add_argument("--tag", required=True)
    r.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    r.add_argument("--out", type=Path, default=Path("outputs/seqrec_compare.jsonl"))
    r.add_argument("--no-local", action="store_true", help="the federation only")
    r.add_argument("overrides", nargs="*")
    rep = sub.add_parser("report")
    rep.add_argument("path", type=Path)
    priv = sub.add_parser("privacy", help="DP tags against a non-private reference tag (served and shared part)")
    priv.add_argument("--reference", required=True, help="the non-private tag")
    priv.add_argument("--tags", nargs="+", required=True, help="the DP tags (then the files: --tags a b -- f.jsonl)")
    priv.add_argument("paths", type=Path, nargs="+")
    sel = sub.add_parser("select", help="rank tags by macro-mean valid metric (hyper-parameter choice on valid)")
    sel.add_argument("--tags", nargs="+", required=True, help="the candidate tags (then the files: --tags a b -- f)")
    sel.add_argument("--key", default="shared-NDCG@10", help="the metric to rank by (default: the shared part's)")
    sel.add_argument("paths", type=Path, nargs="+")
    sw = sub.add_parser("sweep", help="plot DP tags' epsilon vs NDCG@10, served model and shared part")
    sw.add_argument("--reference", required=True, help="the non-private tag")
    sw.add_argument("--tags", nargs="+", required=True, help="the DP tags (then the files: --tags a b -- f)")
    sw.add_argument("--png", type=Path, required=True, help="where to write the plot")
    sw.add_argument("paths", type=Path, nargs="+")
    args = ap.parse_args(argv)
    if args.cmd == "run":
        run(args.tag, args.seeds, args.overrides, args.out, not args.no_local)
    elif args.cmd == "sweep":
        print(f"wrote {sweep_plot(args.paths, args.reference, args.tags, args.png)}")
    elif args.cmd == "select":
        print(select(args.paths, args.tags, args.key))
    elif args.cmd == "privacy":
        print(privacy_report(args.paths, args.reference, args.tags))
    else:
        print(report(args.path))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
