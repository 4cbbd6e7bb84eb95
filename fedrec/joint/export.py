"""The joint model: the global adapter merged into the backbone, plus what each platform scores with.

Folder layout (``fedrec export``; written into a temporary folder and renamed, so a
reader never sees half of it)::

    <out>/fedrec.json                  manifest: scoring settings, source run and round
    <out>/model/                       the user tower: backbone + merged LoRA (a standard HF folder)
    <out>/adapter/                     the same LoRA adapter unmerged, a peft adapter folder
    <out>/item_model/                  the item tower without adapters (only with model.item_tower=frozen)
    <out>/platforms/<name>/items.json  the platform's item ids and texts
    <out>/platforms/<name>/index.pt    L2-normalised item text vectors [n_items, d]
    <out>/platforms/<name>/local.pt    its platform-local parameters (item-ID embeddings; hybrid only)

``model/`` and ``item_model/`` load with ``transformers.AutoModel.from_pretrained`` and
need no fedrec code; :class:`fedrec.joint.Recommender` scores with them. ``adapter/`` loads
onto the backbone with ``peft.PeftModel.from_pretrained(backbone, "<out>/adapter")`` (the
backbone is ``model.backbone`` of the manifest, without the pooling layer) and gives the
outputs of ``model/``.
"""

from __future__ import annotations

import json
import logging
import shutil
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from omegaconf import DictConfig, OmegaConf

from fedrec.documents import FederationSummary, read_results
from fedrec.federated.checkpoint import CHECKPOINT, load_checkpoint
from fedrec.io import safe_name

if TYPE_CHECKING:
    from fedrec.model.encoder import LoraEncoder

log = logging.getLogger("fedrec.joint")

MANIFEST = "fedrec.json"
#: the peft adapter folder inside the export
ADAPTER_DIR = "adapter"


def save_adapter(encoder: LoraEncoder, folder: str | Path) -> Path:
    """Write ``encoder``'s LoRA adapter as a peft adapter folder (``PeftModel.from_pretrained`` loads it).

    Parameters
    ----------
    encoder : LoraEncoder
        The encoder, adapters not merged.
    folder : path-like
        Where ``adapter_config.json`` and ``adapter_model.safetensors`` go.

    Returns
    -------
    pathlib.Path
        ``folder``.
    """
    folder = Path(folder)
    encoder.peft.save_pretrained(str(folder))
    return folder


def export_joint_model(
    cfg: DictConfig,
    adapter: Mapping[str, torch.Tensor],
    out_dir: str | Path,
    local_states: Mapping[str, Mapping[str, torch.Tensor]] | None = None,
    source: Mapping[str, Any] | None = None,
) -> Path:
    """Merge ``adapter`` into the backbone and write the joint model folder.

    Parameters
    ----------
    cfg : DictConfig
        The run's resolved config (model settings; the platforms whose data is
        available here get an item index).
    adapter : mapping
        The global LoRA adapter (:meth:`LoraEncoder.adapter_state` names).
    out_dir : path-like
        The folder to write (replaced atomically if it exists).
    local_states : mapping, optional
        ``{platform: platform-local state}`` (item-ID embeddings); default: the
        platforms' initial state.
    source : mapping, optional
        Provenance recorded in the manifest (run directory, round, aggregation).

    Returns
    -------
    pathlib.Path
        ``out_dir``.

    Raises
    ------
    ValueError
        If the adapter does not fit the configured model.
    """
    from fedrec.build import build_encoder, build_task, load_datasets
    from fedrec.model.backbone import load_backbone

    out_dir = Path(out_dir)
    m = cfg.model
    encoder, tokenizer = build_encoder(m, cfg.seed)
    if set(adapter) != set(encoder.adapter_state()) and cfg.federation.aggregation == "ffa":
        encoder.freeze_lora_a()
    encoder.load_adapter_state(dict(adapter))
    tmp = out_dir.parent / f".{out_dir.name}.tmp-{uuid.uuid4().hex[:8]}"
    tmp.mkdir(parents=True)
    try:
        platforms = {}
        for name, data in load_datasets(cfg).items():
            task = build_task(cfg, data, encoder, tokenizer)
            if local_states and name in local_states:
                task.load_local_state(dict(local_states[name]))
            task.index = None
            task.model.eval()
            with torch.no_grad():
                index = task.refresh_index()
            folder = tmp / "platforms" / name
            folder.mkdir(parents=True)
            (folder / "items.json").write_text(json.dumps({"ids": list(data.item_ids), "texts": list(data.item_texts)}))
            torch.save(index.float().contiguous(), folder / "index.pt")
            if task.model.head is not None:
                torch.save(task.local_state(), folder / "local.pt")
            platforms[name] = {"items": data.num_items, "users": data.num_users, "hybrid": task.model.head is not None}
        if m.item_tower == "frozen":  # items are encoded by the backbone without adapters
            base, _ = load_backbone(m.backbone, m.tiny_layers, m.tiny_hidden)
            base.save_pretrained(tmp / "item_model")
            tokenizer.save_pretrained(tmp / "item_model")
        save_adapter(encoder, tmp / ADAPTER_DIR)  # before merging: merge_and_unload changes the weights in place
        merged = encoder.peft.merge_and_unload()
        merged.save_pretrained(tmp / "model")
        tokenizer.save_pretrained(tmp / "model")
        manifest = {
            "format": "fedrec-joint-model/1",
            "item_tower": str(m.item_tower),
            "score": str(m.score),
            "scale": float(m.scale),
            "bf16": encoder.bf16,
            "item_max_tokens": int(m.item_max_tokens),
            "user_max_tokens": int(m.user_max_tokens),
            "user_item_tokens": int(m.user_item_tokens),
            "history_ids": int(m.history_ids),
            "backbone": str(m.backbone),
            "lora": {"r": int(m.lora_r), "alpha": float(m.lora_alpha), "layers": int(m.lora_layers)},
            "adapter": ADAPTER_DIR,
            "platforms": platforms,
            "source": dict(source or {}),
            "config": OmegaConf.to_container(cfg, resolve=True),
        }
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2))
        if out_dir.exists():
            old = out_dir.parent / f".{out_dir.name}.old-{uuid.uuid4().hex[:8]}"
            out_dir.rename(old)
            tmp.rename(out_dir)
            shutil.rmtree(old)
        else:
            tmp.rename(out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out_dir


def unexportable(cfg: DictConfig) -> str | None:
    """Why a run's joint model cannot be exported (None when it can).

    A platform split into user shards (``federation.shards_per_platform > 1``) with
    hybrid scoring has one set of item-ID embeddings per shard and none for the platform.
    """
    from fedrec.federated.shards import shards_per_platform

    if str(cfg.model.get("kind", "two_tower")) == "seqrec":
        return (
            "the joint-model export (fedrec.Recommender) holds the two-tower model; the sequence model's shared part "
            "is the run's best_adapter.pt and each platform's personal model stays in its client state"
        )
    if shards_per_platform(cfg) > 1 and cfg.model.hybrid:
        return (
            "its platforms were split into user shards, each with its own item-ID embeddings (model.hybrid): "
            "there is no platform-level joint model to export"
        )
    return None


def export_run(run_dir: str | Path, out: str | Path | None = None, adapter: str = "best") -> Path:
    """Export the joint model of a finished ``fedrec simulate`` run directory.

    Parameters
    ----------
    run_dir : path-like
        Holds ``fedrec_config.yaml``, ``best_adapter.pt`` / ``global_adapter.pt``,
        ``results.json``, ``checkpoint/checkpoint.pt`` and the clients' ``client_state/``.
    out : path-like, optional
        Default ``<run_dir>/joint_model``.
    adapter : {"best", "global"}, default "best"
        The best round's adapter (by cross-platform loss) or the last round's.

    Raises
    ------
    ValueError
        If the run directory lacks a file the export needs.
    """
    from fedrec.federated.local_state import LocalStateStore

    run_dir = Path(run_dir)
    if adapter not in ("best", "global"):
        raise ValueError(f"adapter must be 'best' or 'global', got {adapter!r}")
    need = [run_dir / "fedrec_config.yaml", run_dir / f"{adapter}_adapter.pt", run_dir / "results.json"]
    missing = [str(p) for p in need if not p.is_file()]
    if missing:
        raise ValueError(f"{run_dir} is not a finished fedrec simulate run: missing {', '.join(missing)}")
    cfg = OmegaConf.load(run_dir / "fedrec_config.yaml")
    assert isinstance(cfg, DictConfig)
    problem = unexportable(cfg)
    if problem:
        raise ValueError(f"{run_dir}: {problem}")
    fed = read_results(run_dir / "results.json").federation or FederationSummary()
    rnd = int(fed.best_round or fed.rounds) if adapter == "best" else int(fed.rounds)
    state = torch.load(run_dir / f"{adapter}_adapter.pt", weights_only=True)
    ckpt_dir = Path(str(cfg.federation.checkpoint_dir or run_dir / "checkpoint"))
    ck = load_checkpoint(ckpt_dir / CHECKPOINT, lambda msg: log.warning("%s", msg))
    if ck is None:
        raise FileNotFoundError(f"{run_dir}: no checkpoint at {ckpt_dir / CHECKPOINT} (it names the clients' state)")
    run_key = safe_name(str(ck["run_key"]), "the checkpoint's run key")  # a folder name: no ../
    state_root = Path(str(cfg.federation.client_state_dir or run_dir / "client_state")) / run_key
    local = {}
    for name in cfg.platforms:
        found = LocalStateStore(state_root / name).load(rnd)
        if found is not None:
            local[name] = found[1]
    source = {"run_dir": str(run_dir.resolve()), "adapter": adapter, "round": rnd}
    source["aggregation"] = fed.aggregation or None
    return export_joint_model(cfg, state, Path(out) if out else run_dir / "joint_model", local, source)
