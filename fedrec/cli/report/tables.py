"""The Markdown sections of ``RESULTS.md`` read from the grid: utility, ratios, rounds-to-quality, runs, settings."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from fedrec.cli.experiments import FEDERATED, GRID, GRID_DEFAULTS, Row
from fedrec.cli.report.common import DASH, NOT_RUN, machine_text, table
from fedrec.cli.report.grid import Grid, entries, entry_label, loss_curve, platform_stats, xloss_stat
from fedrec.cli.report.stats import QUALITY, Stat, rounds_to_quality
from fedrec.metrics import METRICS, NDCG


def seeds_text(stats: dict[str, dict[str, Stat]]) -> str:
    """The number of seeds behind a line of the table (the largest over its cells)."""
    n = max(s.n for ms in stats.values() for s in ms.values())
    return str(n) if n else "0"


def macro_table(grid: Grid, platforms: Sequence[str]) -> str:
    """The utility table of the macro average over the platforms: one line per entry, with its seeds and loss."""
    rows = []
    for e in entries():
        st = platform_stats(grid, e, platforms)
        xl = "" if e.row.kind == "baselines" else xloss_stat(grid, e.row).text(4, DASH if grid.runs(e.row) else NOT_RUN)
        rows.append([e.label, seeds_text(st), *(st["macro"][k].text() for k in METRICS), xl or DASH])
    return table(["model", "seeds", *METRICS, "cross-platform loss (valid)"], rows)


def utility_section(grid: Grid, platforms: Sequence[str]) -> str:
    """The macro table and one table per platform (mean ± std over seeds, n seeds)."""
    per_platform: dict[str, list[list[str]]] = {p: [] for p in platforms}
    for e in entries():
        st = platform_stats(grid, e, platforms)
        for p in platforms:
            per_platform[p].append([e.label, seeds_text(st), *(st[p][k].text() for k in METRICS)])
    out = [
        "### Macro average over the platforms",
        "",
        macro_table(grid, platforms),
        "",
        "Macro: the mean over the platforms per seed, then over seeds. Cross-platform loss: the weighted "
        "validation loss of the reported model (`eval.loss_weights`); for the federated rows the best round's, on "
        "the validation users scored each round (`federation.eval_max_users`, see Settings).",
        "",
    ]
    for p in platforms:
        out += [f"### {p}", "", table(["model", "seeds", *METRICS], per_platform[p]), ""]
    return "\n".join(out)


def ratio_text(num: Stat, den: Stat) -> str:
    """``num``'s mean as a share of ``den``'s, as a percentage (or why there is none)."""
    if not num.n or not den.n or not den.mean > 0:
        return NOT_RUN if not num.n else DASH
    return f"{num.mean / den.mean:.0%}"


def epsilon_spent(grid: Grid, row: Row) -> str:
    """The largest epsilon any platform spent in a run, mean ± std over the row's seeds."""
    spent = []
    for doc in grid.runs(row).values():
        eps = [float(v) for v in ((doc.privacy or {}).get("epsilon") or {}).values() if v is not None]
        if eps:
            spent.append(max(eps))
    return Stat(tuple(spent)).text(2, DASH)


def ratio_section(grid: Grid, platforms: Sequence[str]) -> str:
    """Federated (DP and not) test NDCG@10 as a share of centralized's, per platform and macro."""
    central = next((e for e in entries() if e.row.kind == "centralized"), None)
    if central is None:
        return "No centralized row in the grid."
    ref = platform_stats(grid, central, platforms)
    if not ref["macro"][NDCG].n and not any(ref[p][NDCG].n for p in platforms):
        return f"Centralized: {NOT_RUN}; no ratio."
    fed = [e for e in entries() if e.row.kind == "federated"]
    rows = []
    for e in fed:
        st = platform_stats(grid, e, platforms)
        cells = [ratio_text(st[p][NDCG], ref[p][NDCG]) for p in [*platforms, "macro"]]
        eps = epsilon_spent(grid, e.row) if e.row.epsilon is not None else DASH
        rows.append([e.label, seeds_text(st), *cells, eps])
    return table(["model", "seeds", *platforms, "macro", "ε spent (max over platforms)"], rows)


def rtq_section(grid: Grid) -> str:
    """Rounds-to-quality per federated row: per seed, and its mean."""
    rows = []
    missing_initial = False
    for row in (r for r in GRID if r.kind == "federated"):
        runs = grid.runs(row)
        if not runs:
            rows.append([entry_label(row), "0", NOT_RUN, NOT_RUN, NOT_RUN, NOT_RUN, NOT_RUN])
            continue
        per_seed, initials, finals, best = [], [], [], []
        for _, doc in sorted(runs.items()):
            initial, curve = loss_curve(doc)
            missing_initial |= initial is None
            r = rounds_to_quality(initial, curve)
            per_seed.append(f"{r}" if r is not None else DASH)
            if initial is not None:
                initials.append(float(initial))
            done = [x for _, x in curve if x is not None]
            if done:
                finals.append(float(done[-1]))
            if doc.federation is not None and doc.federation.best_round is not None:
                best.append(str(doc.federation.best_round))
        found = [int(x) for x in per_seed if x != DASH]
        rows.append(
            [
                entry_label(row),
                str(len(runs)),
                Stat(tuple(initials)).text(4, DASH),
                Stat(tuple(finals)).text(4, DASH),
                ", ".join(best) or DASH,
                ", ".join(per_seed),
                Stat(tuple(float(x) for x in found)).text(1, DASH),
            ]
        )
    head = ["model", "seeds", "round-0 loss", "last-round loss", "best round", "rounds-to-quality", "mean"]
    note = (
        f"Rounds-to-quality: the first round whose cross-platform validation loss has made {QUALITY:.0%} of the "
        "improvement from round 0 (the initial adapter) to the last round; per seed, in seed order. "
        f"{DASH}: no improvement"
        + (", or no round-0 loss (a run without federation.evaluate_initial=true)" if missing_initial else "")
        + "."
    )
    return table(head, rows) + "\n\n" + note


def _load_range(infos: Sequence[dict[str, Any]]) -> str:
    """The range of the 1-minute load average over the runs' machine records ("" without any)."""
    loads = [float(i["load_average"][0]) for i in infos if i.get("load_average")]
    if not loads:
        return ""
    return f"; 1-min load average at the runs' start {min(loads):.1f}–{max(loads):.1f}"


def runs_section(grid: Grid) -> str:
    """Per run row: seeds done, status from the manifest, wall time per run and per round, the machines."""
    records = grid.manifest.get("runs", {})
    rows, machines = [], []
    for row in GRID:
        runs = grid.runs(row)
        recs = {int(k.rsplit("seed", 1)[1]): r for k, r in records.items() if k.startswith(f"{row.name}/seed")}
        seeds = sorted(set(runs) | set(recs))
        status = (
            ", ".join(f"{s}: {'ok' if s in runs else recs.get(s, {}).get('status', NOT_RUN)}" for s in seeds) or NOT_RUN
        )
        wall = Stat(
            tuple(
                float(recs[s]["seconds"]) if "seconds" in recs.get(s, {}) else float(runs[s].seconds)
                for s in seeds
                if s in runs
            )
        )
        rounds = Stat(
            tuple(
                float(d.federation.mean_round_seconds)
                for d in runs.values()
                if d.federation is not None and d.federation.mean_round_seconds is not None
            )
        )
        machines += [r["machine"] for r in recs.values() if r.get("machine")]
        own = [o for o in row.overrides if o not in FEDERATED]
        cmd = "`" + " ".join(["fedrec", row.command, *own]) + "`"
        rows.append([row.name, cmd, status, wall.text(0, DASH), rounds.text(1, DASH)])
    out = table(["row", "command", "seeds: status", "wall s per run", "mean round s"], rows)
    out += f"\n\nEvery federated row also passes `{' '.join((*GRID_DEFAULTS, *FEDERATED))}` (the first "
    out += "before the grid's overrides, which may change it); every run `seed=<k>`, the grid's overrides (header) "
    out += "and `train.progress=false`."
    distinct = list(dict.fromkeys(machine_text(m) for m in machines))
    where = "; ".join(distinct) if distinct else "machine not recorded (runs made outside fedrec experiments)"
    out += f"\n\nMachine: {where}{_load_range(machines)}. Wall s: the whole `fedrec` process of a run (data, model, "
    out += "training, evaluation), mean ± std over seeds."
    if grid.unreadable:
        out += "\n\nUnreadable results files: " + ", ".join(f"`{p}`" for p in grid.unreadable) + "."
    return out


def settings_text(grid: Grid) -> str:
    """One paragraph of the settings the runs share (from a representative results document)."""
    cfg = grid.config()
    if not cfg:
        return ""
    m, t, f = cfg.get("model", {}), cfg.get("train", {}), cfg.get("federation", {})
    eval_users = f.get("eval_max_users", -1)
    parts = [
        f"backbone `{m.get('backbone')}`, LoRA r={m.get('lora_r')} on the top {m.get('lora_layers')} layer(s)",
        f"item tower {m.get('item_tower')}, hybrid {m.get('hybrid')}",
        f"train: {t.get('epochs')} epoch(s), batch {t.get('batch_size')}, {t.get('num_negatives')} negatives, "
        f"max_steps {t.get('max_steps')}",
        f"federation: {f.get('rounds')} rounds x {f.get('local_epochs')} local epochs (local_steps "
        f"{f.get('local_steps')}), validation users per round {'all' if eval_users in (-1, None) else eval_users}",
        f"cross-platform loss weights {cfg.get('eval', {}).get('loss_weights')}",
    ]
    return "Settings (from the runs' `results.json`): " + "; ".join(parts) + "."
