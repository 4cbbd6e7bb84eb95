"""From a resolved configuration to data, encoder and tasks."""

from __future__ import annotations

from pathlib import Path

import torch
from omegaconf import DictConfig
from transformers import PreTrainedTokenizerBase

from fedrec.config import platform_folder
from fedrec.data import DataMissingError, PlatformData, load_platform
from fedrec.data.shard import sample_users
from fedrec.model.backbone import TINY_BACKBONE, load_backbone, resolve_backbone
from fedrec.model.encoder import LoraEncoder
from fedrec.model.inputs import TextInputs
from fedrec.model.precision import resolve_bf16
from fedrec.model.two_tower import PlatformHead
from fedrec.task import Catalogue, PlatformTask


def load_datasets(cfg: DictConfig) -> dict[str, PlatformData]:
    """Load every selected platform (``cfg.platforms``) from ``cfg.data.root``.

    With ``data.download`` on, a benchmark platform whose files are missing is first
    fetched with :func:`fedrec.data.download.download_datasets` (checksums verified);
    without network that fails with a message saying to set ``FEDREC_DATA``. A platform
    with ``user_fraction < 1`` keeps a seeded random share of its users
    (:func:`fedrec.data.shard.sample_users`).
    """
    out = {}
    for name, p in cfg.platforms.items():
        try:
            out[name] = load_platform(p.loader, platform_folder(cfg, name), name)
        except DataMissingError:
            if not cfg.data.download or p.loader == "custom":
                raise
            from fedrec.data.download import DownloadError, download_datasets

            try:
                download_datasets(platform_folder(cfg, name).parent, [p.loader])
            except DownloadError as exc:
                raise DataMissingError(f"platform {name}: files missing under {cfg.data.root} and {exc}") from None
            out[name] = load_platform(p.loader, platform_folder(cfg, name), name)
    for name, p in cfg.platforms.items():
        if float(p.get("user_fraction", 1.0)) < 1.0:
            out[name] = sample_users(out[name], float(p.user_fraction), int(cfg.seed))
    return out


def backbone_key(model_cfg: DictConfig) -> str:
    """String identifying the backbone weights (for cache keys)."""
    if model_cfg.backbone == TINY_BACKBONE:
        return f"tiny-{model_cfg.tiny_layers}-{model_cfg.tiny_hidden}"
    return str(resolve_backbone(model_cfg.backbone).resolve())


def build_encoder(model_cfg: DictConfig, seed: int = 0) -> tuple[LoraEncoder, PreTrainedTokenizerBase]:
    """The shared frozen backbone with fresh LoRA adapters (initialised with ``seed``)."""
    bert, tokenizer = load_backbone(model_cfg.backbone, model_cfg.tiny_layers, model_cfg.tiny_hidden)
    encoder = LoraEncoder(
        bert,
        r=model_cfg.lora_r,
        alpha=model_cfg.lora_alpha,
        dropout=model_cfg.lora_dropout,
        targets=list(model_cfg.lora_targets),
        lora_layers=model_cfg.lora_layers,
        bf16=resolve_bf16(model_cfg.bf16),
        init_seed=seed,
    )
    return encoder, tokenizer


def build_inputs(cfg: DictConfig, data: PlatformData, tokenizer: PreTrainedTokenizerBase) -> TextInputs:
    """The tokenised catalogue and user-text builder of ``data`` with the configured lengths."""
    m, pcfg = cfg.model, cfg.platforms[data.name]
    return TextInputs(
        data,
        tokenizer,
        item_max_tokens=m.item_max_tokens,
        user_max_tokens=m.user_max_tokens,
        user_item_tokens=m.user_item_tokens,
        friend_signal=bool(pcfg.friend_signal),
        friend_tokens=m.friend_tokens,
    )


def build_head(cfg: DictConfig, num_items: int) -> PlatformHead | None:
    """The platform-local item-ID embeddings (seeded with ``cfg.seed``), or None without ``model.hybrid``."""
    m = cfg.model
    if not m.hybrid:
        return None
    with torch.random.fork_rng():
        torch.manual_seed(cfg.seed)
        return PlatformHead(num_items, m.id_dim, m.id_init_std)


def lower_cache_dir(cfg: DictConfig) -> str | None:
    """Where the frozen lower layers' outputs are cached (None with ``model.cache_lower_layers`` off)."""
    return str(Path(cfg.data.cache_dir).expanduser() / "lower") if cfg.model.cache_lower_layers else None


def build_catalogue(cfg: DictConfig, data: PlatformData, inputs: TextInputs, encoder: LoraEncoder) -> Catalogue:
    """The item side of ``data``'s task (:class:`~fedrec.task.Catalogue`), to share between user shards."""
    return Catalogue.build(data, inputs, encoder, lower_cache_dir(cfg), backbone_key(cfg.model), cfg.train.progress)


def build_task(
    cfg: DictConfig,
    data: PlatformData,
    encoder: LoraEncoder,
    tokenizer: PreTrainedTokenizerBase | None = None,
    inputs: TextInputs | None = None,
    head: PlatformHead | None = None,
    catalogue: Catalogue | None = None,
) -> PlatformTask:
    """A :class:`PlatformTask` for ``data`` with the configured inputs, head and caches.

    Parameters
    ----------
    cfg : DictConfig
        The resolved config (``model``, ``train``, ``data``, ``platforms``).
    data : PlatformData
        The platform, or one user shard of it.
    encoder : LoraEncoder
        The shared encoder.
    tokenizer : PreTrainedTokenizerBase, optional
        Tokenises the catalogue; needed unless ``inputs`` is given.
    inputs : TextInputs, optional
        The platform's tokenised catalogue (possibly built for the whole platform):
        reused through :meth:`TextInputs.with_data`.
    head : PlatformHead, optional
        A platform head to use (shared between shards, whose local state is loaded
        before each use); default: a new one (:func:`build_head`).
    catalogue : Catalogue, optional
        The platform's item side, shared (default: built).
    """
    if inputs is None:
        if tokenizer is None:
            raise ValueError("build_task needs a tokenizer or prebuilt inputs")
        inputs = build_inputs(cfg, data, tokenizer)
    else:
        inputs = inputs.with_data(data)
    if head is None:
        head = build_head(cfg, data.num_items)
    m = cfg.model
    return PlatformTask(
        data,
        inputs,
        encoder,
        head=head,
        score=m.score,
        scale=m.scale,
        item_tower=m.item_tower,
        examples_per_user=cfg.train.examples_per_user,
        history_ids=m.history_ids,
        cache_dir=lower_cache_dir(cfg),
        backbone_key=backbone_key(m),
        seed=cfg.seed,
        progress=cfg.train.progress,
        catalogue=catalogue,
    )
