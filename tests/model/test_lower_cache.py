"""lower_states: length-sorted, padding-free batches give the states of the full padded forward."""

from __future__ import annotations

from pathlib import Path

import torch

from fedrec.model.backbone import load_backbone
from fedrec.model.encoder import LoraEncoder
from fedrec.model.lower_cache import lower_states
from tests.synthetic import perturb_adapters

TEXTS = [
    "tree",
    "a much longer sentence about the blue ocean and its waves crashing on the rocks",
    "red apple",
    "sun light over the green hills",
    "x",
    "a medium length text about music",
]


def _encoder() -> tuple[LoraEncoder, dict[str, torch.Tensor]]:
    bert, tokenizer = load_backbone("tiny", tiny_layers=3, tiny_hidden=32)
    encoder = LoraEncoder(bert, r=4, lora_layers=1)
    perturb_adapters(encoder, seed=3)
    tok = tokenizer(TEXTS, padding="max_length", max_length=24, truncation=True, return_tensors="pt")
    return encoder, tok


def test_trimmed_batches_equal_the_padded_forward_on_real_tokens() -> None:
    encoder, tok = _encoder()
    ids, mask = tok["input_ids"], tok["attention_mask"]
    full = encoder.lower(ids, mask)  # every row padded to 24 tokens
    cached = lower_states(encoder, ids, mask, batch_size=2, progress=False)  # batches of similar length
    assert cached.shape == full.shape
    real = mask.bool()
    torch.testing.assert_close(cached[real], full[real], atol=1e-5, rtol=1e-5)
    # lengths 3, 17, 4, 8, 3, 8 in batches of 2 by length: (17, 8), (8, 4), (3, 3)
    assert mask.sum(1).tolist() == [3, 17, 4, 8, 3, 8]
    assert bool((cached[[0, 4], 3:] == 0).all()) and bool((full[[0, 4], 3:] != 0).any())
    assert bool((cached[2, 8:] == 0).all())  # nothing computed beyond a batch's longest text
    # what the model sees: the adapted upper layers and the pooled vector
    torch.testing.assert_close(encoder.upper(cached, mask), encoder.upper(full, mask), atol=1e-5, rtol=1e-5)


def test_disk_cache_is_reused_and_a_corrupt_file_recomputed(tmp_path: Path) -> None:
    encoder, tok = _encoder()
    ids, mask = tok["input_ids"], tok["attention_mask"]
    first = lower_states(encoder, ids, mask, cache_dir=tmp_path, backbone_key="k", progress=False)
    (path,) = tmp_path.glob("lower-*.pt")
    torch.save(torch.full_like(first, 7.0), path)  # a cached file is what is returned...
    assert bool((lower_states(encoder, ids, mask, cache_dir=tmp_path, backbone_key="k", progress=False) == 7).all())
    path.write_bytes(b"not a tensor")  # ...and a corrupt one is recomputed and rewritten
    again = lower_states(encoder, ids, mask, cache_dir=tmp_path, backbone_key="k", progress=False)
    torch.testing.assert_close(again, first)
    torch.testing.assert_close(torch.load(path, weights_only=True), first)
