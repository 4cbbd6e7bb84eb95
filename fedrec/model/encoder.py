"""The shared text encoder: frozen BERT with peft LoRA adapters on its top layers.

The encoder is split at the first layer that carries an adapter. Everything below
(embeddings and the lower layers) is frozen and deterministic, so its output can be
computed once per text and cached (:meth:`LoraEncoder.lower`); training then runs
only the top layers (:meth:`LoraEncoder.upper`). ``upper(lower(x)) == forward(x)``
exactly.
"""

from __future__ import annotations

from typing import cast

import torch
from peft import LoraConfig, PeftModel, get_peft_model
from torch import nn
from transformers import BertModel

from fedrec.model.backbone import autocast, mean_pool


def lora_layer_indices(num_layers: int, lora_layers: int) -> list[int]:
    """Indices of the layers that get adapters: the top ``lora_layers`` (0 = all)."""
    if lora_layers <= 0 or lora_layers >= num_layers:
        return list(range(num_layers))
    return list(range(num_layers - lora_layers, num_layers))


class LoraEncoder(nn.Module):
    """Frozen BERT + LoRA on the top layers, with a cacheable lower half.

    Parameters
    ----------
    backbone : transformers.BertModel
        Frozen backbone (from :func:`fedrec.model.backbone.load_backbone`).
    r : int, default 8
        LoRA rank.
    alpha : float, default 16.0
        LoRA alpha.
    dropout : float, default 0.0
        LoRA dropout.
    targets : list of str, default ["query", "value"]
        Linear modules that get adapters.
    lora_layers : int, default 2
        Adapters on the top N layers (0 = all).
    bf16 : bool, default False
        Run the backbone's matmuls under bf16 autocast.
    init_seed : int, default 0
        Seed of the adapters' initialisation (LoRA A); every federated party
        starting from the same seed starts from the same adapter.
    """

    def __init__(
        self,
        backbone: BertModel,
        r: int = 8,
        alpha: float = 16.0,
        dropout: float = 0.0,
        targets: list[str] | None = None,
        lora_layers: int = 2,
        bf16: bool = False,
        init_seed: int = 0,
    ) -> None:
        super().__init__()
        n = backbone.config.num_hidden_layers
        self.lora_indices = lora_layer_indices(n, lora_layers)
        self.split = self.lora_indices[0]
        cfg = LoraConfig(
            r=r,
            lora_alpha=alpha,  # type: ignore[arg-type]  # peft annotates int, accepts float
            lora_dropout=dropout,
            target_modules=list(targets or ["query", "value"]),
            layers_to_transform=self.lora_indices,
            bias="none",
        )
        with torch.random.fork_rng():
            torch.manual_seed(init_seed)
            self.peft: PeftModel = get_peft_model(backbone, cfg)
        self.bf16 = bf16
        self.hidden_size = backbone.config.hidden_size

    @property
    def bert(self) -> BertModel:
        """The underlying (adapter-injected) BertModel."""
        return cast(BertModel, self.peft.base_model.model)

    def train(self, mode: bool = True) -> LoraEncoder:
        """Set training mode on the adapters only; the frozen backbone stays in eval mode."""
        super().train(mode)
        self.bert.eval()
        for name, module in self.bert.named_modules():
            if "lora_" in name:
                module.train(mode)
        return self

    @staticmethod
    def _mask(attention_mask: torch.Tensor) -> torch.Tensor:
        return attention_mask.bool()[:, None, None, :]

    def _layers(self, hidden: torch.Tensor, attention_mask: torch.Tensor, start: int, stop: int) -> torch.Tensor:
        mask = self._mask(attention_mask)
        for layer in self.bert.encoder.layer[start:stop]:
            out = layer(hidden, attention_mask=mask)
            hidden = out[0] if isinstance(out, tuple) else out
        return hidden

    @torch.no_grad()
    def lower(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Output of the embeddings and the frozen layers below the first adapter.

        Parameters
        ----------
        input_ids, attention_mask : torch.Tensor
            ``[B, L]`` token ids and mask.

        Returns
        -------
        torch.Tensor
            ``[B, L, hidden]`` float32 hidden states (no gradient).
        """
        with autocast(self.bf16):
            hidden = self.bert.embeddings(input_ids=input_ids, token_type_ids=torch.zeros_like(input_ids))
            hidden = self._layers(hidden, attention_mask, 0, self.split)
        return hidden.float()

    def upper(self, hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Run the adapter-carrying top layers on cached lower states and mean-pool.

        Returns
        -------
        torch.Tensor
            ``[B, hidden]`` float32 sentence vectors (not normalised).
        """
        length = int(attention_mask.sum(1).max())
        hidden, attention_mask = hidden[:, :length], attention_mask[:, :length]
        with autocast(self.bf16):
            hidden = self._layers(hidden, attention_mask, self.split, len(self.bert.encoder.layer))
        return mean_pool(hidden.float(), attention_mask)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Full forward pass: :meth:`upper` of :meth:`lower` (lower layers without gradient)."""
        return self.upper(self.lower(input_ids, attention_mask), attention_mask)

    # -- the federated part -------------------------------------------------------------
    def freeze_lora_a(self) -> None:
        """Freeze every LoRA A matrix (FFA-LoRA): only the B matrices train.

        A stays at its seeded initialisation, shared by every party built with the same
        ``init_seed``; :meth:`adapter_state` / :meth:`load_adapter_state` then cover the
        B matrices only. Each A weight becomes a buffer rather than a frozen parameter:
        peft re-enables ``requires_grad`` on every adapter parameter whenever adapters are
        switched back on (e.g. after ``disable_adapter()``), which would unfreeze it.
        """
        for name, module in self.named_modules():
            if ".lora_A." in f"{name}." and isinstance(module, nn.Linear) and "weight" in module._parameters:
                weight = module.weight.detach()
                del module.weight
                module.register_buffer("weight", weight)

    def adapter_state(self) -> dict[str, torch.Tensor]:
        """The LoRA tensors (what crosses the wire), detached copies keyed by parameter name."""
        return {n: p.detach().clone() for n, p in self.named_parameters() if p.requires_grad}

    def load_adapter_state(self, state: dict[str, torch.Tensor]) -> None:
        """Load LoRA tensors from :meth:`adapter_state`; shapes and names must match.

        Raises
        ------
        ValueError
            On a missing, unexpected, mis-shaped or non-finite tensor.
        """
        params = {n: p for n, p in self.named_parameters() if p.requires_grad}
        missing, unexpected = set(params) - set(state), set(state) - set(params)
        if missing or unexpected:
            raise ValueError(
                f"adapter state mismatch: missing {sorted(missing)[:3]}, unexpected {sorted(unexpected)[:3]}"
            )
        for n, t in state.items():
            if tuple(t.shape) != tuple(params[n].shape):
                raise ValueError(f"adapter tensor {n} has shape {tuple(t.shape)}, expected {tuple(params[n].shape)}")
            if not torch.isfinite(t).all():
                raise ValueError(f"adapter tensor {n} holds non-finite values")
        with torch.no_grad():
            for n, t in state.items():
                params[n].copy_(t)
