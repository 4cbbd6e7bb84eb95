"""A causal transformer over item sequences (SASRec-style), written for per-sample gradients.

Every parameter lives in an ``nn.Linear``, ``nn.LayerNorm`` or ``nn.Embedding`` (the
positions are an embedding looked up with batch-first ids), and attention is
:func:`torch.nn.functional.scaled_dot_product_attention`, which has no parameters: so
Opacus's hooks compute exact per-row gradients of the whole encoder, one row per user.

Histories are **left-padded**: the newest item sits at the last position, so position
``T - 1`` is the user's state after the whole history. Positions are the columns of a
window of ``max_len`` (a shorter batch is the right end of that window), as in SASRec.
A padding position would attend to nothing (every key before it is padding) and give
NaN; it attends to itself instead, and its output is zeroed, so no score computed from
a padding position can be NaN (PROTOCOL.md's metric trap).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class CausalSelfAttention(nn.Module):
    """Multi-head causal self-attention with a key-padding mask.

    Parameters
    ----------
    dim : int
        Model width.
    heads : int
        Attention heads (``dim`` must be divisible by it).
    dropout : float
        Dropout on the attention weights and the output.
    """

    def __init__(self, dim: int, heads: int, dropout: float) -> None:
        super().__init__()
        if dim % heads:
            raise ValueError(f"dim {dim} is not divisible by heads {heads}")
        self.heads, self.dropout = heads, dropout
        self.qkv = nn.Linear(dim, 3 * dim)
        self.out = nn.Linear(dim, dim)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, allowed: torch.Tensor) -> torch.Tensor:
        """``x [B, T, d]``; ``allowed [B, 1, T, T]`` bool (query may attend to key)."""
        b, t, d = x.shape
        q, k, v = self.qkv(x).view(b, t, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        p = self.dropout if self.training else 0.0
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=allowed, dropout_p=p)
        return self.drop(self.out(y.transpose(1, 2).reshape(b, t, d)))


class Block(nn.Module):
    """Pre-norm transformer block: causal attention and a position-wise feed-forward layer."""

    def __init__(self, dim: int, heads: int, dropout: float, ffn_mult: int) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = CausalSelfAttention(dim, heads, dropout)
        self.norm2 = nn.LayerNorm(dim)
        self.ffn_in = nn.Linear(dim, ffn_mult * dim)
        self.ffn_out = nn.Linear(ffn_mult * dim, dim)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, allowed: torch.Tensor) -> torch.Tensor:
        """One block on ``x [B, T, d]``."""
        x = x + self.attn(self.norm1(x), allowed)
        return x + self.drop(self.ffn_out(F.gelu(self.ffn_in(self.norm2(x)))))


def attention_mask(mask: torch.Tensor, causal: bool = True) -> torch.Tensor:
    """``[B, 1, T, T]`` bool: keys restricted to real items (and earlier ones if causal), each position sees itself.

    Parameters
    ----------
    mask : torch.Tensor
        ``[B, T]`` bool, True at real (non-padding) positions.
    causal : bool, default True
        A position attends to itself and earlier positions only.
    """
    t = mask.shape[1]
    allowed = mask[:, None, :].expand(-1, t, -1)
    if causal:
        allowed = allowed & torch.ones(t, t, dtype=torch.bool, device=mask.device).tril()[None]
    allowed = allowed | torch.eye(t, dtype=torch.bool, device=mask.device)[None]
    return allowed[:, None]


class SequenceEncoder(nn.Module):
    """Causal transformer from a sequence of item vectors to one user state per position.

    Parameters
    ----------
    dim : int
        Width of the item vectors and of the model.
    max_len : int
        Longest sequence: the window whose columns are the positions.
    layers : int, default 2
        Transformer blocks.
    heads : int, default 2
        Attention heads.
    dropout : float, default 0.2
        Dropout on the inputs, the attention and the feed-forward outputs.
    ffn_mult : int, default 1
        Feed-forward width as a multiple of ``dim`` (SASRec uses 1).
    causal : bool, default True
        The default mode of :meth:`forward`: causal attention with positions (a sequence).
        False: every item attends to every real item and no positional embedding is added
        (a set: an order-free history). One encoder serves both modes (same weights), so
        platforms with and without a time order can share it.
    """

    def __init__(
        self,
        dim: int,
        max_len: int,
        layers: int = 2,
        heads: int = 2,
        dropout: float = 0.2,
        ffn_mult: int = 1,
        causal: bool = True,
    ) -> None:
        super().__init__()
        self.max_len, self.causal = max_len, causal
        self.position = nn.Embedding(max_len, dim)
        self.input_norm = nn.LayerNorm(dim)
        self.drop = nn.Dropout(dropout)
        self.blocks = nn.ModuleList(Block(dim, heads, dropout, ffn_mult) for _ in range(layers))
        self.norm = nn.LayerNorm(dim)
        nn.init.normal_(self.position.weight, std=0.02)

    def forward(self, items: torch.Tensor, mask: torch.Tensor, causal: bool | None = None) -> torch.Tensor:
        """User states ``[B, T, d]``: position ``t`` sums up items ``<= t`` (all if not causal); zero at padding.

        Parameters
        ----------
        items : torch.Tensor
            ``[B, T, d]`` item vectors, left-padded (newest item last).
        mask : torch.Tensor
            ``[B, T]`` bool, True at real items.
        causal : bool, optional
            Sequence (True) or set (False); default: the encoder's ``causal``.
        """
        causal = self.causal if causal is None else causal
        b, t, _ = items.shape
        if t > self.max_len:
            raise ValueError(f"sequence of length {t} is longer than max_len={self.max_len}")
        if causal:
            # the right end of a max_len window: the newest item always has position max_len - 1
            items = items + self.position(
                torch.arange(self.max_len - t, self.max_len, device=items.device).expand(b, t)
            )
        keep = mask.unsqueeze(-1).to(items.dtype)
        x = self.drop(self.input_norm(items)) * keep
        allowed = attention_mask(mask, causal)
        for block in self.blocks:
            x = block(x, allowed) * keep
        return self.norm(x) * keep
