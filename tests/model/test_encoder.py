"""LoraEncoder: the cached lower-layer path is exact; adapters are the only trainable part."""

from __future__ import annotations

import pytest
import torch

from fedrec.model.backbone import encode_texts, load_backbone, mean_pool
from fedrec.model.encoder import LoraEncoder, lora_layer_indices
from tests.synthetic import perturb_adapters

TEXTS = ["red apple", "a much longer sentence about the blue ocean and its waves", "tree", "sun light over hills"]


def _hf_forward(encoder: LoraEncoder, tok: dict[str, torch.Tensor]) -> torch.Tensor:
    out = encoder.peft(input_ids=tok["input_ids"], attention_mask=tok["attention_mask"]).last_hidden_state
    return mean_pool(out, tok["attention_mask"])


def test_lora_layer_indices() -> None:
    assert lora_layer_indices(6, 2) == [4, 5]
    assert lora_layer_indices(6, 0) == list(range(6))
    assert lora_layer_indices(6, 9) == list(range(6))


@pytest.mark.parametrize("lora_layers", [1, 0])
def test_cached_lower_layers_equal_full_forward_tiny(lora_layers: int) -> None:
    bert, tokenizer = load_backbone("tiny", tiny_layers=3, tiny_hidden=32)
    encoder = LoraEncoder(bert, r=4, lora_layers=lora_layers)
    perturb_adapters(encoder)  # LoRA B starts at zero: make the adapters matter
    tok = tokenizer(TEXTS, padding=True, return_tensors="pt")
    lower = encoder.lower(tok["input_ids"], tok["attention_mask"])
    cached = encoder.upper(lower, tok["attention_mask"])
    torch.testing.assert_close(cached, _hf_forward(encoder, tok), atol=1e-5, rtol=1e-5)
    # one row alone (different padding) gives the same vector as inside the batch
    one = tokenizer(TEXTS[:1], return_tensors="pt")
    alone = encoder.upper(encoder.lower(one["input_ids"], one["attention_mask"]), one["attention_mask"])
    torch.testing.assert_close(alone[0], cached[0], atol=1e-5, rtol=1e-5)


def test_real_minilm_weights_cached_path_and_semantics() -> None:
    bert, tokenizer = load_backbone("minilm")
    assert bert.config.num_hidden_layers == 6 and bert.config.hidden_size == 384
    encoder = LoraEncoder(bert, lora_layers=2)
    tok = tokenizer(TEXTS, padding=True, truncation=True, max_length=32, return_tensors="pt")
    base = _hf_forward(encoder, tok)
    # with LoRA B = 0 the adapted model is the pretrained one: same as the plain encoder
    torch.testing.assert_close(
        torch.nn.functional.normalize(base, dim=-1), encode_texts(bert, tokenizer, TEXTS), atol=1e-5, rtol=1e-4
    )
    perturb_adapters(encoder)
    cached = encoder.upper(encoder.lower(tok["input_ids"], tok["attention_mask"]), tok["attention_mask"])
    torch.testing.assert_close(cached, _hf_forward(encoder, tok), atol=1e-4, rtol=1e-4)
    # the real weights carry meaning: related sentences are closer than unrelated ones
    v = encode_texts(bert, tokenizer, ["a cat sits on the mat", "a kitten lies on a rug", "the stock market crashed"])
    assert float(v[0] @ v[1]) > float(v[0] @ v[2]) + 0.2


def test_only_adapters_are_trainable() -> None:
    bert, _ = load_backbone("tiny")
    encoder = LoraEncoder(bert, r=4, lora_layers=1)
    trainable = [n for n, p in encoder.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n for n in trainable)
    assert all(".layer.1." in n for n in trainable)  # top layer only (2-layer tiny model)


def test_adapter_state_round_trip_and_rejections() -> None:
    bert, _ = load_backbone("tiny")
    encoder = LoraEncoder(bert, r=4, lora_layers=1)
    state = encoder.adapter_state()
    name = next(iter(state))
    changed = {k: v + 1.0 for k, v in state.items()}
    encoder.load_adapter_state(changed)
    torch.testing.assert_close(encoder.adapter_state()[name], changed[name])
    with pytest.raises(ValueError, match="shape"):
        encoder.load_adapter_state({**state, name: torch.zeros(3, 3)})
    with pytest.raises(ValueError, match="non-finite"):
        encoder.load_adapter_state({**state, name: torch.full_like(state[name], float("nan"))})
    with pytest.raises(ValueError, match="missing"):
        encoder.load_adapter_state({k: v for k, v in state.items() if k != name})
