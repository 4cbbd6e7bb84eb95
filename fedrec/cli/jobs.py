"""The jobs behind the CLI commands; each takes the resolved Hydra config."""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Callable, Mapping
from functools import wraps
from pathlib import Path
from typing import Any

import numpy as np
import torch
from omegaconf import DictConfig

from fedrec.config import validate
from fedrec.data.types import DataFormatError, DataMissingError
from fedrec.metrics import NDCG
from fedrec.model.backbone import BackboneMissingError

log = logging.getLogger("fedrec")
USER_ERRORS = (DataFormatError, DataMissingError, BackboneMissingError, ValueError)


def output_dir() -> Path:
    """The Hydra run directory of the current job."""
    from hydra.core.hydra_config import HydraConfig

    return Path(HydraConfig.get().runtime.output_dir)


def cli_job(fn: Callable[[DictConfig], dict[str, Any]]) -> Callable[[DictConfig], dict[str, Any]]:
    """Validate the config, seed, set threads; turn known user errors into a clean message."""

    @wraps(fn)
    def run(cfg: DictConfig) -> dict[str, Any]:
        try:
            validate(cfg)
            check_model_kind(cfg)
            torch.manual_seed(cfg.seed)
            np.random.seed(cfg.seed)
            torch.set_num_threads(cfg.train.threads)
            return fn(cfg)
        except USER_ERRORS as exc:
            print(f"fedrec: error: {exc}", file=sys.stderr)
            raise SystemExit(2) from None

    return run


#: commands that build the two-tower model from the config (export and recommend read the run's own)
TWO_TOWER_COMMANDS = ("train",)


def check_model_kind(cfg: DictConfig) -> None:
    """Refuse a command that does not run the configured model (rather than training another one).

    Raises
    ------
    ValueError
        ``model.kind=seqrec`` with a command of :data:`TWO_TOWER_COMMANDS`.
    """
    if str(cfg.command) in TWO_TOWER_COMMANDS and str(cfg.model.kind) == "seqrec":
        raise ValueError(
            f"fedrec {cfg.command} runs the two-tower model: add model=minilm_lora (or model=tiny); the sequence "
            "model (model=seqrec, the default) trains with fedrec simulate, whose federation.compare_local=true "
            "also trains each platform alone"
        )


def evaluate_tasks(tasks: list[Any], splits: list[str], batch_size: int) -> dict[str, dict[str, Any]]:
    """``{platform: {split: metrics}}`` of the current model on each task."""
    return {t.name: {s: t.evaluate(s, batch_size=batch_size) for s in splits} for t in tasks}


@cli_job
def train_job(cfg: DictConfig) -> dict[str, Any]:
    """``fedrec train``: local (one model per platform) or centralized (pooled) training."""
    from fedrec.build import build_encoder, build_task, load_datasets
    from fedrec.results import cross_platform_loss, print_table, results_document, write_results
    from fedrec.train import fit, fit_options

    start = time.perf_counter()
    datasets = load_datasets(cfg)
    encoder, tokenizer = build_encoder(cfg.model, cfg.seed)
    initial = encoder.adapter_state()
    tasks = [build_task(cfg, d, encoder, tokenizer) for d in datasets.values()]
    t = cfg.train
    kw = dict(epochs=t.epochs, max_steps=t.max_steps, seed=cfg.seed, progress=t.progress, **fit_options(t))
    platforms: dict[str, Any] = {}
    training: dict[str, Any] = {}
    private = bool(cfg.privacy.enabled)  # validate() refuses it with mode=centralized
    groups = [tasks] if cfg.mode == "centralized" else [[task] for task in tasks]
    for group in groups:
        encoder.load_adapter_state(initial)
        if private:
            from fedrec.privacy import train_private_from_config

            result = train_private_from_config(group[0], cfg)
        else:
            result = fit(group, **kw)  # type: ignore[assignment]  # same reporting fields
        label = "+".join(task.name for task in group)
        training[label] = {
            "steps": result.steps,
            "examples": result.num_examples,
            "loss": result.loss,
            "seconds": round(result.seconds, 2),
            "examples_per_second": round(result.examples_per_second, 1),
        }
        if private:
            training[label]["privacy"] = result.public_metrics()  # type: ignore[attr-defined]
        log.info("trained %s: %d steps, %.1f examples/s", label, result.steps, result.examples_per_second)
        platforms.update(evaluate_tasks(group, list(cfg.eval.splits), t.eval_batch_size))
    xloss = None
    if all("valid" in v for v in platforms.values()):
        xloss = cross_platform_loss(
            {p: v["valid"]["loss"] for p, v in platforms.items()},
            {p: v["valid"]["users"] for p, v in platforms.items()},
            cfg.eval.loss_weights,
        )
    doc = results_document(
        "train",
        cfg,
        platforms,
        time.perf_counter() - start,
        mode=cfg.mode,
        cross_platform_loss=xloss,
        training=training,
    )
    path = write_results(output_dir(), cfg.output, doc)
    split = "test" if "test" in cfg.eval.splits else cfg.eval.splits[0]
    print_table(
        f"fedrec train mode={cfg.mode}: {split} (cross-platform loss {xloss})",
        [(p, f"lora-{cfg.mode}", v[split]) for p, v in platforms.items()],
    )
    print_privacy(
        {label: rec.get("privacy") for label, rec in training.items()},
        f"over {t.epochs:g} epoch(s) of local training",
        DP_HINT if cfg.mode == "local" else "",  # DP-SGD trains each platform alone
    )
    print(f"results: {path}")
    return doc.to_json()


@cli_job
def baselines_job(cfg: DictConfig) -> dict[str, Any]:
    """``fedrec baselines``: MostPop, ItemKNN, frozen text, EASE and SASRec under the protocol."""
    from fedrec.baselines import baseline_label, options_from_config, run_baselines
    from fedrec.baselines.run import cache_dir_from_config
    from fedrec.build import load_datasets
    from fedrec.results import print_table, results_document, write_results

    start = time.perf_counter()
    datasets = load_datasets(cfg)
    res = run_baselines(
        datasets,
        models=list(cfg.baselines),
        splits=list(cfg.eval.splits),
        backbone=cfg.model.backbone,
        cache_dir=cache_dir_from_config(cfg),
        batch_size=cfg.train.eval_batch_size,
        progress=cfg.train.progress,
        **options_from_config(cfg),
    )
    platforms = {p: {m: {"model": m, **splits} for m, splits in models.items()} for p, models in res.items()}
    doc = results_document("baselines", cfg, platforms, time.perf_counter() - start, cross_platform_loss=None)
    path = write_results(output_dir(), cfg.output, doc)
    split = "test" if "test" in cfg.eval.splits else cfg.eval.splits[0]
    rows = [(p, baseline_label(m, v), v[split]) for p, ms in res.items() for m, v in ms.items()]
    print_table(f"fedrec baselines: {split}", rows)
    print(f"results: {path}")
    return doc.to_json()


@cli_job
def simulate_job(cfg: DictConfig) -> dict[str, Any]:
    """``fedrec simulate``: the platforms federated through Flower's simulation engine, then compared.

    After the rounds (``server.simulation.simulate``), with ``federation.compare_local``
    each platform's local-only model is trained with the same local compute and the
    transfer matrix is scored; ``federation.compare_baselines`` are scored too. The
    final table shows, per platform, the joint model next to local-only and the
    baselines; everything goes into ``results.json`` (``comparison``).
    """
    from fedrec.documents import ResultsDocument
    from fedrec.federated.compare import baselines, client_steps, local_only
    from fedrec.federated.replies import merge_local_reports
    from fedrec.results import write_results

    start = time.perf_counter()
    from fedrec.seqrec.warm import warm_text_cache
    from server.simulation import simulate

    out = output_dir()
    warm_text_cache(cfg)  # the frozen item text once, on every core, before the clients need it
    raw = simulate(cfg, out)
    # the operator plays every platform here: a DP run's test metrics come from their local reports
    merge_local_reports(raw, raw["config"]["federation"]["client_state_dir"])
    doc = ResultsDocument.from_json(raw)
    assert doc.federation is not None
    fed_seconds = time.perf_counter() - start
    comparison: dict[str, Any] = {}
    if cfg.federation.compare_local:
        t0 = time.perf_counter()
        log.info("local-only models at the same local compute as the clients, and the transfer matrix")
        steps = client_steps(doc.federation.history)
        comparison["local_only"] = local_only(cfg, steps, progress=cfg.train.progress)
        comparison["local_only"]["seconds"] = round(time.perf_counter() - t0, 2)
    if cfg.federation.compare_baselines:
        t0 = time.perf_counter()
        comparison["baselines"] = baselines(cfg, list(cfg.federation.compare_baselines))
        comparison["baselines_seconds"] = round(time.perf_counter() - t0, 2)
    doc.comparison = comparison
    from fedrec.joint.export import unexportable
    from fedrec.seqrec.build import is_seqrec

    skip = unexportable(cfg)
    if cfg.federation.export_joint_model and skip:
        # the default sequence model is expected here (its shared part is best_adapter.pt): said, not warned
        (log.info if is_seqrec(cfg) else log.warning)("no joint-model export: %s", skip)
        doc.joint_model = {"skipped": skip}
    elif cfg.federation.export_joint_model:
        from fedrec.joint import export_run

        t0 = time.perf_counter()
        write_results(out, cfg.output, doc)
        doc.joint_model = {"path": str(export_run(out)), "seconds": round(time.perf_counter() - t0, 2)}
    doc.federation.simulation_seconds = round(fed_seconds, 2)
    doc.federation.invocation_seconds = round(time.perf_counter() - start, 2)
    path = write_results(out, cfg.output, doc)
    written = doc.to_json()
    print_simulation(written)
    print(f"results: {path}")
    return written


def print_simulation(doc: dict[str, Any]) -> None:
    """The final tables of ``fedrec simulate``: per-platform test metrics, transfer matrix, privacy spent."""
    from rich.console import Console
    from rich.table import Table

    from fedrec.federated.compare import transfer_rows
    from fedrec.federated.rounds import summary_rows
    from fedrec.results import print_table

    fed = doc["federation"]
    comp = doc.get("comparison", {})
    local = comp.get("local_only", {}).get("models", {})
    base = comp.get("baselines", {})
    rows = []
    for platform, label, metrics in summary_rows(doc):
        rows.append((platform, label, metrics))
        if platform in local:
            rows.append((platform, f"local-only ({local[platform]['steps']} steps)", local[platform]["test"]))
        for name, m in (("shared part", metrics), ("local shared part", local.get(platform, {}).get("test", {}))):
            part = shared_part(m)  # the sequence model: its text path alone, beside the served model
            if part:
                rows.append((platform, name, part))
        for model, m in base.get(platform, {}).items():
            rows.append((platform, model, m))
    xloss = doc.get("cross_platform_loss")
    chosen = (
        f"best round's adapter (cross-platform loss {xloss:.4f})"
        if xloss is not None
        else f"round {fed.get('best_round')}'s adapter (no validation reached the server)"  # DP: withheld
    )
    source = "; test metrics from the platforms' local reports" if doc.get("evaluation") else ""
    print_table(
        f"fedrec simulate ({fed['aggregation']}, {fed['rounds']} rounds): test, joint model = {chosen}{source}", rows
    )
    if "local_only" in comp:
        tr = comp["local_only"]["transfer"]
        table = Table(title="transfer: test NDCG@10 of each adapter (row) on each platform (column)")
        table.add_column("adapter", justify="left")
        for p in tr["platforms"]:
            table.add_column(p, justify="right")
        for row in transfer_rows(doc):
            table.add_row(*row)
        Console().print(table)
    rounds = fed.get("rounds", "?")
    print_privacy(simulation_privacy(doc), f"cumulative over all {rounds} rounds")


def shared_part(metrics: Mapping[str, Any]) -> dict[str, Any]:
    """The shared part's metrics of a sequence-model result (``shared-<metric>``; empty for the two-tower model)."""
    from fedrec.federated.replies import SHARED_PREFIX

    out = {k[len(SHARED_PREFIX) :]: v for k, v in metrics.items() if k.startswith(SHARED_PREFIX)}
    if out and "users" in metrics:
        out["users"] = metrics["users"]
    return out


#: how to turn DP-SGD on, in the non-private runs' privacy line
DP_HINT = "privacy=target_eps privacy.target_epsilon=8 trains under user-level DP-SGD"


def privacy_lines(
    spent: Mapping[str, Mapping[str, Any] | None], scope: str, hint: str = DP_HINT
) -> tuple[str, list[tuple[str, str, str, str]]]:
    """The privacy a run spent: a title and one row per platform (or trained group).

    Parameters
    ----------
    spent : mapping
        Platform -> its privacy record (``epsilon``, ``delta``, ``accountant``,
        ``noise_multiplier``, ``sample_rate``, ``max_grad_norm``), or None if it trained
        without DP.
    scope : str
        What the epsilon covers, e.g. ``"cumulative over all 5 rounds"``.
    hint : str, default :data:`DP_HINT`
        Appended to the title of a non-private run ("" for none).

    Returns
    -------
    tuple
        ``(title, rows)``; each row is ``(platform, epsilon, noise multiplier, sample rate)``
        as text, epsilon ``inf`` without DP.
    """

    def num(x: Any, fmt: str) -> str:
        return "-" if x is None else format(x, fmt)

    rows = [
        (p, "inf", "-", "-")
        if rec is None or rec.get("epsilon") is None
        else (
            p,
            num(rec["epsilon"], ".3f"),
            num(rec.get("noise_multiplier"), ".4g"),
            num(rec.get("sample_rate"), ".4g"),
        )
        for p, rec in sorted(spent.items())
    ]
    first = next((rec for rec in spent.values() if rec is not None), None)
    if first is None:
        return "privacy spent: none, a non-private run (epsilon = inf)" + (f"; {hint}" if hint else ""), rows
    title = (
        f"privacy spent: {scope} (user-level epsilon, delta={first.get('delta')}; "
        f"{first.get('accountant')} accountant, max grad norm {first.get('max_grad_norm')})"
    )
    return title, rows


def simulation_privacy(doc: Mapping[str, Any]) -> dict[str, dict[str, Any] | None]:
    """Per platform, the privacy record of a ``fedrec simulate`` results document (None each without DP)."""
    priv = doc.get("privacy")
    if not priv:
        return {p: None for p in doc.get("platforms", {})}
    common = {k: priv.get(k) for k in ("delta", "accountant", "max_grad_norm")}
    return {
        p: {
            **common,
            "epsilon": e,
            "noise_multiplier": priv.get("noise_multiplier", {}).get(p),
            "sample_rate": priv.get("sample_rate", {}).get(p),
        }
        for p, e in priv.get("epsilon", {}).items()
    }


def print_privacy(spent: Mapping[str, Mapping[str, Any] | None], scope: str, hint: str = DP_HINT) -> None:
    """Print :func:`privacy_lines` as a table."""
    from rich.console import Console
    from rich.table import Table

    title, rows = privacy_lines(spent, scope, hint)
    table = Table(title=title)
    for col in ("platform", "epsilon", "noise multiplier", "sample rate"):
        table.add_column(col, justify="left" if col == "platform" else "right")
    for row in rows:
        table.add_row(*row)
    Console().print(table)


def newest(pattern: str) -> Path | None:
    """The most recently modified path matching ``pattern`` (relative to the working directory)."""
    found = sorted(Path().glob(pattern), key=lambda p: p.stat().st_mtime)
    return found[-1] if found else None


@cli_job
def export_job(cfg: DictConfig) -> dict[str, Any]:
    """``fedrec export``: the joint model of a ``fedrec simulate`` run (merged backbone + item indexes)."""
    from fedrec.joint import export_run

    run_dir = Path(cfg.run_dir) if cfg.run_dir else newest("outputs/simulate/*/results.json")
    if run_dir is None:
        raise ValueError("no run_dir given and no outputs/simulate/*/results.json here; run fedrec simulate first")
    if run_dir.name == "results.json":
        run_dir = run_dir.parent
    folder = export_run(run_dir, cfg.joint_model or None, cfg.adapter)
    print(f"joint model of {run_dir} ({cfg.adapter} adapter): {folder}")
    return {"joint_model": str(folder)}


@cli_job
def recommend_job(cfg: DictConfig) -> dict[str, Any]:
    """``fedrec recommend platform=<name> user=<id>``: top-k unseen items for one of the platform's users."""
    from rich.console import Console
    from rich.table import Table

    from fedrec.build import load_datasets
    from fedrec.joint import Recommender

    if len(cfg.platforms) != 1:
        raise ValueError(f"fedrec recommend needs one platform (platform=<name>), got {list(cfg.platforms)}")
    if not cfg.user:
        raise ValueError("fedrec recommend needs a user: user=<id as in the platform's data>")
    folder = Path(cfg.joint_model) if cfg.joint_model else newest("outputs/simulate/*/joint_model/fedrec.json")
    if folder is None:
        raise ValueError("no joint_model given and none under outputs/simulate/*/joint_model; run fedrec simulate")
    if folder.name == "fedrec.json":
        folder = folder.parent
    name = next(iter(cfg.platforms))
    rec = Recommender.load(folder)
    if name not in rec.platforms:
        raise ValueError(f"platform {name!r} is not in the joint model {folder} (it has {rec.platforms})")
    data = load_datasets(cfg)[name]
    users = {str(u): i for i, u in enumerate(data.user_ids)}
    if str(cfg.user) not in users:
        raise ValueError(f"user {cfg.user!r} is not in platform {name!r}'s data ({data.num_users} users)")
    u = users[str(cfg.user)]
    seen = np.append(data.history(u, "test"), data.target("test")[u])  # everything the user interacted with
    positions = rec.item_positions(name, [data.item_ids[i] for i in seen])
    top = rec.recommend_items(name, positions, k=cfg.k, mmr_lambda=cfg.mmr_lambda)
    table = Table(
        title=f"{name}: top {cfg.k} for user {cfg.user} ({len(seen)} items seen; mmr_lambda={cfg.mmr_lambda})"
    )
    for col in ("#", "item", "score", "text"):
        table.add_column(col, justify="right" if col in ("#", "score") else "left")
    for rank, r in enumerate(top, 1):
        table.add_row(str(rank), r.item_id, f"{r.score:.3f}", r.text)
    Console().print(table)
    return {"platform": name, "user": str(cfg.user), "items": [r.item_id for r in top]}


@cli_job
def audit_job(cfg: DictConfig) -> dict[str, Any]:
    """``fedrec audit``: canary membership inference on one platform, non-private vs private."""
    from rich.console import Console
    from rich.table import Table

    from fedrec.privacy.audit import run_audit
    from fedrec.results import results_document, write_results
    from fedrec.seqrec.audit import run_seq_audit
    from fedrec.seqrec.build import is_seqrec

    start = time.perf_counter()
    audit = run_seq_audit(cfg) if is_seqrec(cfg) else run_audit(cfg)
    doc = results_document("audit", cfg, {audit["platform"]: audit["models"]}, time.perf_counter() - start, audit=audit)
    path = write_results(output_dir(), cfg.output, doc)
    c = audit["canaries"]
    table = Table(
        title=f"fedrec audit {audit['platform']}: {c['per_side']}+{c['per_side']} canaries, loss threshold, "
        f"confidence {cfg.audit.confidence:g}"
    )
    for col in ("model", "attack", "formal ε", "AUC", "ε_lb", "ε_lb max", "ceiling", NDCG):
        table.add_column(col, justify="left" if col in ("model", "attack") else "right", no_wrap=True)
    for r in audit["rows"]:
        table.add_row(
            r["model"],
            r["attack"],
            f"{r['epsilon']:.3g}",
            f"{r['auc']:.3f}",
            f"{r['epsilon_lb']:.3f}",
            f"{r['epsilon_lb_max']:.3f}",
            f"{r['ceiling']:.2f}",
            f"{r[f'test_{NDCG}']:.4f}",
        )
    console = Console()
    if not console.is_terminal:  # a pipe or a file: do not squeeze the table into 80 columns
        console = Console(width=120)
    console.print(table)
    for name, what in audit["attacks"].items():
        console.print(f"attack {name}: {what}")
    console.print(
        f"ε_lb: threshold chosen on half the canaries, bound on the other half (valid at the confidence); "
        f"ε_lb max: best threshold on all canaries (optimistic); ceiling: the largest ε_lb this many canaries can "
        f"show. Private run: {audit['private_run']['source']}, delta={cfg.privacy.delta:g}."
    )
    print(f"results: {path}")
    if audit["violations"]:
        for message in audit["violations"]:
            console.print(f"[bold red]{message}[/bold red]", highlight=False)
            print(message, file=sys.stderr)
        raise SystemExit(3)
    return doc.to_json()
