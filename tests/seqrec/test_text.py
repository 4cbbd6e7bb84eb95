"""The catalogue's text vectors: the frozen index is cached on disk and reused without the lower layers."""

from __future__ import annotations

from pathlib import Path

import torch

from fedrec.model.backbone import load_backbone
from fedrec.model.encoder import LoraEncoder
from fedrec.model.inputs import TextInputs
from fedrec.seqrec.text import ItemText
from fedrec.task import Catalogue
from tests.synthetic import synthetic_platform


def _text(cache: Path | None, adapter: bool = False, seed: int = 0) -> ItemText:
    data = synthetic_platform()
    bert, tok = load_backbone("tiny", tiny_layers=2, tiny_hidden=32)
    enc = LoraEncoder(bert, r=4, alpha=8.0, lora_layers=1, init_seed=seed)
    cat = Catalogue.build(
        data, TextInputs(data, tok, item_max_tokens=16), enc, None if cache is None else str(cache), "tiny", False
    )
    return ItemText(cat, enc, adapter=adapter)


def test_the_frozen_index_is_loaded_from_the_cache_without_the_lower_layers(tmp_path: Path) -> None:
    uncached = _text(None).index()
    first = _text(tmp_path).index()
    torch.testing.assert_close(first, uncached, rtol=0, atol=0)
    assert len(list(tmp_path.glob("frozen-text-*.pt"))) == 1 and len(list(tmp_path.glob("lower-*.pt"))) == 1
    again = _text(tmp_path)
    torch.testing.assert_close(again.index(), first, rtol=0, atol=0)
    assert again.catalogue._hidden is None  # the [N, L, h] lower-layer states were never loaded


def test_a_corrupt_frozen_index_is_recomputed(tmp_path: Path) -> None:
    first = _text(tmp_path).index()
    (path,) = tmp_path.glob("frozen-text-*.pt")
    path.write_bytes(path.read_bytes()[:100])  # truncated
    torch.testing.assert_close(_text(tmp_path).index(), first, rtol=0, atol=0)
    assert path.stat().st_size > 100  # rewritten whole


def test_the_trained_adapter_is_never_served_from_the_cache(tmp_path: Path) -> None:
    text = _text(tmp_path, adapter=True, seed=3)
    before = text.index().clone()
    with torch.no_grad():
        for p in text.encoder.parameters():
            if p.requires_grad:
                p.add_(0.5)
    assert not torch.allclose(text.refresh(), before)  # the index follows the adapter
    assert not list(tmp_path.glob("frozen-text-*.pt"))


def test_the_length_sorted_index_equals_one_unsorted_pass() -> None:
    base = _text(None, adapter=True, seed=2)
    cat = base.catalogue
    mask = cat.item_mask.clone()
    gen = torch.Generator().manual_seed(0)
    for i, n in enumerate(torch.randint(1, mask.shape[1] + 1, (mask.shape[0],), generator=gen).tolist()):
        mask[i, n:] = 0  # texts of every length from 1 token to the full width
    hidden = cat.item_hidden * mask.unsqueeze(-1)
    text = ItemText(Catalogue(cat.item_tok, mask, hidden), base.encoder, adapter=True, batch_size=8)
    with torch.no_grad():
        whole = torch.nn.functional.normalize(text.encoder.upper(hidden, mask), dim=-1)
    torch.testing.assert_close(text.index(), whole, rtol=1e-5, atol=1e-6)
