"""``fedrec bench comm``: bytes on the wire per client per round, per aggregation mode.

What crosses the wire is the adapter state a client receives and sends: the initial
adapter built exactly as the server builds it
(:func:`fedrec.federated.server.initial_adapter`, with LoRA A frozen and not sent under
``ffa``). Each round a client receives it for training, sends its update back, and
receives the new adapter for validation; after the last round every client receives the
best adapter once more for the test split. Sizes are given three ways: raw tensor bytes
(:func:`~fedrec.federated.aggregate.state_nbytes`), Flower's ``ArrayRecord.count_bytes``
(what ``history.json`` reports) and the record's protobuf serialisation. Each message also
carries the run's resolved config (a few KiB of YAML), counted separately.

The reference is the frozen backbone: what a client would move per round if the whole
model were federated. The default-run totals use ``federation.*`` of the composed
config (by default 5 rounds, 3 platforms, all sampled every round).
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Any

from fedrec.cli.bench.common import base_overrides, compose, document, machine_info, print_table, ratio, write_result

NAME = "comm"
KIB = 1024


def _fmt_bytes(n: float) -> str:
    for unit, size in (("GiB", 1024**3), ("MiB", 1024**2), ("KiB", 1024)):
        if n >= size:
            return f"{n / size:,.1f} {unit}"
    return f"{n:,.0f} B"


def wire_sizes(state: dict[str, Any], cfg: Any) -> dict[str, int]:
    """Flower's view of one adapter message: ``ArrayRecord.count_bytes``, protobuf bytes, config bytes.

    The record is built by the ServerApp's own ``to_record`` (``server/app.py``); Flower
    is imported here only, lazily (the library itself does not depend on it).
    """
    from flwr.app import ConfigRecord
    from flwr.common.serde import array_record_to_proto, config_record_to_proto

    from fedrec.federated.server import Coordinator
    from server.app import to_record

    record = to_record(state)
    with tempfile.TemporaryDirectory() as tmp:
        co = Coordinator(cfg, tmp, state, 0)
        config = ConfigRecord(co.message_config())
    return {
        "array_record_bytes": int(record.count_bytes()),
        "protobuf_bytes": int(array_record_to_proto(record).ByteSize()),
        "config_bytes": int(config_record_to_proto(config).ByteSize()),
    }


def run_comm(
    overrides: list[str] | None = None,
    smoke: bool = False,
    out_dir: str | Path = "outputs/bench",
    modes: tuple[str, ...] = ("fedavg", "ffa", "svd"),
) -> dict[str, Any]:
    """Run the comm benchmark, print its table and write ``bench_comm.json``.

    Parameters
    ----------
    overrides : list of str, optional
        Extra Hydra overrides (model, federation, platforms ...).
    smoke : bool, default False
        The tiny random BERT.
    out_dir : path-like, default "outputs/bench"
        Where the JSON goes.
    modes : tuple of str, default ("fedavg", "ffa", "svd")
        Aggregation modes to size.

    Returns
    -------
    dict
        The document written to ``<out_dir>/bench_comm.json``.
    """
    from fedrec.federated.aggregate import state_nbytes
    from fedrec.federated.rounds import initial_adapter

    start = time.perf_counter()
    base = base_overrides(smoke, None, list(overrides or []))
    cfg = compose(base)
    machine = machine_info()
    fed = cfg.federation
    n = len(cfg.platforms)
    min_clients = int(fed.min_clients) or n
    train_clients = min(n, max(int(n * float(fed.fraction_train)), min_clients))
    rounds = int(fed.rounds)
    rows: list[dict[str, Any]] = []
    backbone = 0
    for mode in modes:
        mcfg = compose([*base, f"federation.aggregation={mode}"])
        state, backbone = initial_adapter(mcfg)
        raw = state_nbytes(state)
        wire = wire_sizes(state, mcfg)
        per_msg = wire["protobuf_bytes"]
        per_client_round = 3 * per_msg  # down (train) + up + down (validation)
        run_total = rounds * (train_clients * 2 * per_msg + n * per_msg) + n * per_msg
        rows.append(
            {
                "mode": mode,
                "tensors": len(state),
                "parameters": int(sum(v.size for v in state.values())),
                "raw_bytes": raw,
                **wire,
                "per_client_round_bytes": per_client_round,
                "per_client_round_with_config_bytes": per_client_round + 3 * wire["config_bytes"],
                "adapter_to_backbone": ratio(raw, backbone),
                "run_total_bytes": run_total,
                "run_total_with_config_bytes": run_total
                + (rounds * (2 * train_clients + n) + n) * wire["config_bytes"],
            }
        )
    full_round = 3 * backbone
    full_run = rounds * (train_clients * 2 + n) * backbone + n * backbone
    for r in rows:
        r["per_round_vs_full_model"] = ratio(r["per_client_round_bytes"], full_round)
    default_mode = str(cfg.federation.aggregation)
    by_mode = {r["mode"]: r for r in rows}
    summary = {
        "backbone_bytes": backbone,
        "full_model_per_client_round_bytes": full_round,
        "full_model_run_total_bytes": full_run,
        "default_mode": default_mode,
        "default_run_total_bytes": by_mode[default_mode]["run_total_bytes"] if default_mode in by_mode else None,
        "rounds": rounds,
        "clients": n,
        "train_clients_per_round": train_clients,
    }
    if "ffa" in by_mode and "fedavg" in by_mode:
        summary["ffa_vs_fedavg"] = ratio(by_mode["ffa"]["raw_bytes"], by_mode["fedavg"]["raw_bytes"])
    m = cfg.model
    settings = {
        "backbone": str(m.backbone),
        "lora_r": int(m.lora_r),
        "lora_layers": int(m.lora_layers),
        "lora_targets": list(m.lora_targets),
        "platforms": list(cfg.platforms),
        "rounds": rounds,
        "fraction_train": float(fed.fraction_train),
        "min_clients": int(fed.min_clients),
        "overrides": base,
    }
    doc = document(NAME, machine, smoke, settings, rows, summary, time.perf_counter() - start)
    path = write_result(out_dir, NAME, doc)
    placement = "all layers" if int(m.lora_layers) == 0 else f"top {m.lora_layers} layers"
    print_table(
        f"fedrec bench comm: LoRA r={m.lora_r} on {', '.join(m.lora_targets)} of the {placement}, {m.backbone} "
        f"(backbone {_fmt_bytes(backbone)})",
        ["mode", "tensors", "raw", "ArrayRecord", "protobuf", "per client per round", "vs backbone", "run total"],
        [
            [
                r["mode"],
                r["tensors"],
                _fmt_bytes(r["raw_bytes"]),
                _fmt_bytes(r["array_record_bytes"]),
                _fmt_bytes(r["protobuf_bytes"]),
                _fmt_bytes(r["per_client_round_bytes"]),
                f"{r['adapter_to_backbone']:.3%}",
                _fmt_bytes(r["run_total_bytes"]),
            ]
            for r in rows
        ]
        + [
            [
                "full model",
                "-",
                _fmt_bytes(backbone),
                "-",
                "-",
                _fmt_bytes(full_round),
                "100%",
                _fmt_bytes(full_run),
            ]
        ],
        machine,
        [
            "per client per round = 3 messages (adapter down for training, update up, new adapter down for "
            "validation), protobuf size; run total = "
            f"{rounds} rounds x ({train_clients} training clients x 2 + {n} validating clients) messages + {n} for "
            "the final test, with the composed federation.* settings.",
            f"each message also carries the resolved config: {_fmt_bytes(rows[0]['config_bytes'])} "
            f"(run total with it, {rows[0]['mode']}: {_fmt_bytes(rows[0]['run_total_with_config_bytes'])}); "
            f"default mode {default_mode}; results: {path}",
        ],
    )
    return doc.to_json()
