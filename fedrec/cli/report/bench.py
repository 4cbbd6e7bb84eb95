"""The benchmarks in the results report: reading ``bench_*.json``, one table per benchmark, headline clauses."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

from fedrec.cli.bench import BENCHMARKS
from fedrec.cli.report.common import DASH, machine_text, number, size_text, table
from fedrec.documents import BenchDocument

SCALE_PLOT = "results_round_time_vs_clients.png"


def bench_train(doc: BenchDocument) -> str:
    """``bench_train.json``: examples/s and peak RSS per row, non-DP vs DP."""
    s = doc.settings
    rows = [
        [
            r["row"],
            number(r["non_dp"]["examples_per_s"]),
            number(r["dp"]["examples_per_s"]),
            number(r.get("dp_ratio"), 2),
            number(r["non_dp"].get("peak_rss_mib"), 0),
            number(r["dp"].get("peak_rss_mib"), 0),
        ]
        for r in doc.rows
    ]
    head = ["row", "non-DP examples/s", "DP examples/s", "DP/non-DP", "non-DP peak MiB", "DP peak MiB"]
    return (
        f"Local training, {s.get('platform')}, {s.get('backbone')}, batch {s.get('batch')}, "
        f"{s.get('num_negatives')} negatives, {s.get('threads')} thread(s):\n\n" + table(head, rows)
    )


def bench_seqtrain(doc: BenchDocument) -> str:
    """``bench_seqtrain.json``: the sequence model's users/s and targets/s per platform, non-DP vs DP."""
    s = doc.settings
    rows = [
        [
            r["platform"],
            number(r.get("users")),
            number(r["non_dp"]["examples_per_s"]),
            number(r["dp"]["examples_per_s"]),
            number(r["non_dp"].get("targets_per_s")),
            number(r["dp"].get("targets_per_s")),
            number(r.get("dp_ratio"), 2),
            number(r["dp"].get("peak_rss_mib"), 0),
        ]
        for r in doc.rows
    ]
    head = ["platform", "users", "non-DP users/s", "DP users/s", "non-DP targets/s", "DP targets/s", "DP/non-DP"]
    return (
        f"Local training of the sequence model ({s.get('model')}), {s.get('batch')} users per step, "
        f"{s.get('threads')} thread(s):\n\n" + table([*head, "DP peak MiB"], rows)
    )


def bench_encode(doc: BenchDocument) -> str:
    """``bench_encode.json``: item-index build rate and one user's top-10 latency."""
    s, m = doc.settings, doc.summary
    rows = [
        [r["stage"], r.get("precision", DASH), number(r.get("items")), number(r.get("items_per_s"))] for r in doc.rows
    ]
    return (
        f"Item index and recommendation latency, {s.get('platform')}, {s.get('backbone')}: top-{s.get('k', 10)} "
        f"latency p50 {number(m.get('latency_p50_ms'), 2)} ms, p99 {number(m.get('latency_p99_ms'), 2)} ms "
        f"({number(m.get('catalogue_items'))} items); whole index built in {number(m.get('index_seconds'), 2)} s.\n\n"
        + table(["stage", "precision", "items", "items/s"], rows)
    )


def bench_comm(doc: BenchDocument) -> str:
    """``bench_comm.json``: bytes per client per round per aggregation mode."""
    m = doc.summary
    rows = [
        [
            r["mode"],
            size_text(r.get("raw_bytes")),
            size_text(r.get("per_client_round_bytes")),
            f"{r['adapter_to_backbone']:.3%}" if isinstance(r.get("adapter_to_backbone"), float) else DASH,
            size_text(r.get("run_total_bytes")),
        ]
        for r in doc.rows
    ]
    return (
        f"Communication ({doc.settings.get('backbone')}, backbone {size_text(m.get('backbone_bytes'))}, "
        f"{m.get('rounds')} rounds, {m.get('clients')} clients); sizes do not depend on the machine:\n\n"
        + table(["mode", "adapter", "per client per round", "adapter vs backbone", "run total"], rows)
    )


def bench_round(doc: BenchDocument) -> str:
    """``bench_round.json``: a Flower simulation's round time split."""
    s, m = doc.settings, doc.summary
    rows = [
        [
            "median, rounds 2+",
            number(m.get("round_s"), 2),
            number(m.get("compute_s"), 2),
            number((m.get("aggregate_s") or 0.0) * 1000, 2),
            number(m.get("overhead_s"), 2),
            f"{m['overhead_fraction']:.0%}" if isinstance(m.get("overhead_fraction"), float) else DASH,
        ]
    ]
    return (
        f"Round time of a Flower simulation ({s.get('backbone')}, {len(s.get('platforms', []))} clients, "
        f"{s.get('local_steps')} local steps x batch {s.get('batch')}, {s.get('eval_users')} validation users):\n\n"
        + table(["", "wall s", "compute s", "aggregate ms", "overhead s", "overhead"], rows)
    )


def scale_rows(doc: BenchDocument) -> list[tuple[float, float]]:
    """``(clients, round seconds)`` points of ``bench_scale.json``: the rows that have a ``round_s``.

    Older files' keys for it are renamed on reading (:data:`fedrec.documents.LEGACY_KEYS`).
    """
    pts = []
    for r in doc.rows:
        if isinstance(r.get("clients"), int | float) and isinstance(r.get("round_s"), int | float):
            pts.append((float(r["clients"]), float(r["round_s"])))
    return sorted(pts)


#: ``bench_scale.json`` row fields in the RESULTS.md table: (key, header, digits)
SCALE_COLUMNS = (
    ("clients", "clients", 0),
    ("shards_per_platform", "shards per platform", 0),
    ("round_s", "round s (median)", 2),
    ("round_s_x", "x 3 clients", 1),
    ("round_cpu_s", "round CPU s", 2),
    ("cpu_ms_per_client", "CPU ms per client", 0),
    ("first_round_s", "round 1 s", 1),
    ("server_peak_mib", "server peak MiB", 0),
    ("actors_peak_mib", "actors peak MiB", 0),
    ("ray_peak_mib", "Ray peak MiB", 0),
    ("bytes_per_round", "bytes per round", None),
)


def bench_scale(doc: BenchDocument) -> str:
    """``bench_scale.json``: round time, CPU and memory per federation size, the fitted growth, where it stopped."""
    rows = doc.rows
    body_rows = []
    for r in rows:
        cells = [size_text(r.get(k)) if d is None else number(r.get(k), d) for k, _, d in SCALE_COLUMNS]
        body_rows.append([*cells, str(r.get("stopped", "ok"))])
    body = table([h for _, h, _ in SCALE_COLUMNS] + ["status"], body_rows) if rows else "(no rows)"
    s, m = doc.settings, doc.summary
    head = (
        f"Simulated federations ({s.get('backbone', '?')}, every platform's users split into shards, one client "
        f"each; {s.get('rounds', '?')} rounds of {s.get('local_steps', '?')} local steps x batch "
        f"{s.get('batch', '?')}, "
        f"{s.get('eval_users_per_client', '?')} validation users per client; medians over rounds 2+; "
        f"[plot]({SCALE_PLOT})):"
    )
    fit = ""
    if isinstance(m.get("round_ms_per_client"), int | float):
        fit = (
            "\n\nLeast-squares growth over the completed sizes: round time "
            f"{number(m.get('round_s_fixed'), 2)} s + {number(m.get('round_ms_per_client'), 1)} ms per client, "
            f"round CPU {number(m.get('round_cpu_s_fixed'), 2)} s + "
            f"{number(m.get('round_cpu_ms_per_client'), 1)} ms per client; server memory "
            f"{number(m.get('server_mib_fixed'), 0)} MiB + {number(m.get('server_mib_per_100_clients'), 1)} MiB "
            f"per 100 clients, actors + {number(m.get('actors_mib_per_100_clients'), 1)} MiB per 100 clients. "
            "Largest completed: "
            f"{m.get('largest_completed')} clients; "
            + (
                f"stopped at {m['stopped_at']} clients: {m.get('stop_reason')}."
                if m.get("stopped_at")
                else "no size was stopped (time budget or memory cap)."
            )
        )
    return f"{head}\n\n{body}{fit}"


BENCH_RENDERERS: dict[str, Callable[[BenchDocument], str]] = {
    "train": bench_train,
    "seqtrain": bench_seqtrain,
    "encode": bench_encode,
    "comm": bench_comm,
    "round": bench_round,
    "scale": bench_scale,
}


def read_bench(folder: str | Path | None) -> dict[str, BenchDocument]:
    """``{name: document}`` of the ``bench_<name>.json`` files in ``folder`` (unreadable ones left out)."""
    found: dict[str, BenchDocument] = {}
    if folder is None or not Path(folder).is_dir():
        return found
    for name in BENCHMARKS:
        path = Path(folder) / f"bench_{name}.json"
        if path.is_file():
            try:
                found[name] = load_bench(path, name)
            except (ValueError, OSError, TypeError):
                continue
    return found


def load_bench(path: Path, name: str) -> BenchDocument:
    """One ``bench_<name>.json``.

    Raises
    ------
    OSError, ValueError, TypeError
        If it cannot be read, is not JSON or is not a bench document.
    """
    return BenchDocument.from_json(json.loads(path.read_text()), name)


def bench_section(folder: str | Path | None, docs: dict[str, BenchDocument]) -> str:
    """The benchmarks: each one's table, the machine it ran on, and a line for each missing one."""
    if folder is None:
        return "No benchmark folder given (`--bench DIR`)."
    out = []
    for name in BENCHMARKS:
        doc = docs.get(name)
        path = Path(folder) / f"bench_{name}.json"
        if doc is None and path.is_file():
            try:
                load_bench(path, name)  # only to say why it was left out
            except (ValueError, OSError, TypeError) as exc:
                out.append(f"**{name}**: could not read `bench_{name}.json` ({type(exc).__name__}: {exc}).")
                continue
        if doc is None:
            out.append(f"**{name}**: `bench_{name}.json` missing in `{folder}` (run `fedrec bench {name}`).")
            continue
        try:
            body = BENCH_RENDERERS[name](doc)
        except (KeyError, TypeError, ValueError) as exc:
            body = f"could not read `bench_{name}.json` ({type(exc).__name__}: {exc})"
        machine = doc.machine
        load = "/".join(f"{x:.1f}" for x in machine.get("load_average", []))
        smoke = " **Smoke run (tiny random model): not a measurement.**" if doc.smoke else ""
        out.append(
            f"**{name}** (`fedrec bench {name}`, {machine.get('time', 'time not recorded')}):{smoke}\n\n{body}\n\n"
            f"Machine: {machine_text(machine)}, {machine.get('torch_threads', '?')} torch thread(s); "
            f"load average {load or 'n/a'} (1/5/15 min)."
        )
    return "\n\n".join(out)


def _train_clause(doc: BenchDocument) -> str:
    m = doc.summary
    return (
        f"DP-SGD trains at {m['dp_ratio_median']:.2f}x the non-private examples/s (median over "
        f"{len(doc.rows)} settings, lowest {m['dp_ratio_min']:.2f}); the fastest DP setting "
        f"({m['fastest_dp_row']}) runs {m['fastest_dp_examples_per_s']:.1f} examples/s"
    )


def _comm_clause(doc: BenchDocument) -> str:
    m = doc.summary
    row = next(r for r in doc.rows if r["mode"] == m.get("default_mode", "fedavg"))
    return (
        f"a client moves {size_text(row['per_client_round_bytes'])} per round ({row['mode']}), "
        f"{row['adapter_to_backbone']:.2%} of the {size_text(m['backbone_bytes'])} backbone; "
        f"a default run {size_text(m['default_run_total_bytes'])} in all"
    )


def _round_clause(doc: BenchDocument) -> str:
    return f"Flower/Ray overhead is {doc.summary['overhead_fraction']:.0%} of a simulated round"


def _scale_clause(doc: BenchDocument) -> str:
    m = doc.summary
    stop = f", stopped at {m['stopped_at']}: {m['stop_reason']}" if m.get("stopped_at") else ""
    return (
        f"the largest simulated federation had {m['largest_completed']} clients (tiny BERT, round time "
        f"+{m['round_ms_per_client']:.0f} ms per client{stop})"
    )


#: the README headline's clause per benchmark (encode has none)
BENCH_CLAUSES: dict[str, Callable[[BenchDocument], str]] = {
    "train": _train_clause,
    "comm": _comm_clause,
    "round": _round_clause,
    "scale": _scale_clause,
}


def bench_headline(bench: dict[str, BenchDocument]) -> str:
    """The benchmarks' headline figures, one clause per benchmark found (empty without any).

    Parameters
    ----------
    bench : dict
        ``{name: document}`` as :func:`read_bench` returns it.

    Returns
    -------
    str
        A sentence naming the machine of the first benchmark, or ``""``; a file that cannot
        be read is named in place of its clause and the others are still quoted.
    """
    parts: list[str] = []
    for name, clause in BENCH_CLAUSES.items():
        if name not in bench:
            continue
        try:
            parts.append(clause(bench[name]))
        except (KeyError, TypeError, ValueError, StopIteration) as exc:
            parts.append(f"`bench_{name}.json` could not be read ({type(exc).__name__}: {exc})")
    if not parts:
        return ""
    machine = next(iter(bench.values())).machine
    smoke = " Smoke benchmarks (tiny random model): not measurements." if any(d.smoke for d in bench.values()) else ""
    return f"Benchmarks ({machine_text(machine)}): " + "; ".join(parts) + "." + smoke
