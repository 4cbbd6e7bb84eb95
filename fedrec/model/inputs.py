"""From a platform's items and histories to token tensors (item text and user text).

The user text is the text of the user's history, most recent item first, each item
cut to ``user_item_tokens`` tokens and the whole cut to ``user_max_tokens``:
``[CLS] newest [SEP] second newest [SEP] ...``. With the friend signal on, a segment
with the friends' most played train items closes the text (its own token budget).
"""

from __future__ import annotations

import copy
from collections import Counter
from collections.abc import Sequence

import numpy as np
import torch
from transformers import PreTrainedTokenizerBase

from fedrec.data.types import PlatformData


def pad(rows: Sequence[Sequence[int]], pad_id: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-pad token id lists into ``(input_ids, attention_mask)`` ``[B, max_len]``."""
    length = max((len(r) for r in rows), default=1)
    ids = torch.full((len(rows), length), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), length), dtype=torch.long)
    for i, r in enumerate(rows):
        ids[i, : len(r)] = torch.as_tensor(r, dtype=torch.long)
        mask[i, : len(r)] = 1
    return ids, mask


def user_text_tokens(history_tokens: Sequence[Sequence[int]], budget: int, cls: int, sep: int) -> list[int]:
    """Token ids of a user text: ``[CLS]``, the history items most recent first, ``[SEP]`` after each.

    Parameters
    ----------
    history_tokens : sequence of token-id lists
        Each history item's (already truncated) tokens, oldest first.
    budget : int
        Total length, special tokens included (the text is cut there and closed with ``[SEP]``).
    cls, sep : int
        The tokenizer's special token ids.
    """
    toks = [cls]
    for item in reversed(history_tokens):
        if len(toks) >= budget:
            break
        toks += [*item, sep]
    toks = toks[:budget]
    if toks[-1] != sep:
        toks.append(sep)
    return toks


def item_text_tokens(tokens: Sequence[int], max_tokens: int, cls: int, sep: int) -> list[int]:
    """``[CLS] tokens[: max_tokens - 2] [SEP]``: an item text of at most ``max_tokens`` ids."""
    return [cls, *tokens[: max_tokens - 2], sep]


class TextInputs:
    """Tokenised catalogue of one platform and the user-text builder.

    Parameters
    ----------
    data : PlatformData
        The platform.
    tokenizer : transformers.PreTrainedTokenizerBase
        The backbone's tokenizer.
    item_max_tokens : int, default 32
        Item text length, special tokens included.
    user_max_tokens : int, default 64
        User text length, special tokens included.
    user_item_tokens : int, default 16
        Tokens each history item may take in the user text.
    friend_signal : bool, default False
        Close the user text with the friends' most played train items.
    friend_tokens : int, default 16
        Token budget of the friend segment.
    friend_items : int, default 3
        Number of friends' items named in the segment.
    """

    def __init__(
        self,
        data: PlatformData,
        tokenizer: PreTrainedTokenizerBase,
        item_max_tokens: int = 32,
        user_max_tokens: int = 64,
        user_item_tokens: int = 16,
        friend_signal: bool = False,
        friend_tokens: int = 16,
        friend_items: int = 3,
    ) -> None:
        self.data = data
        self.cls, self.sep = int(tokenizer.cls_token_id), int(tokenizer.sep_token_id)
        self.pad_id = int(tokenizer.pad_token_id or 0)
        raw = tokenizer(list(data.item_texts), add_special_tokens=False, truncation=False)["input_ids"]
        self.item_tokens = [item_text_tokens(r, item_max_tokens, self.cls, self.sep) for r in raw]
        self.hist_tokens = [r[:user_item_tokens] for r in raw]
        self.user_max_tokens = user_max_tokens
        self.friend_tokens = friend_tokens if friend_signal else 0
        self.friend_items = friend_items
        self.friend_prefix: list[int] = []
        if friend_signal:
            if not data.friends:
                raise ValueError(f"platform {data.name} has no friend graph; friend_signal needs one")
            self.friend_prefix = tokenizer("friends like", add_special_tokens=False)["input_ids"]
        self.friend_segment = self._friend_segments(data)

    def _friend_segments(self, data: PlatformData) -> dict[int, list[int]]:
        """Each user's friend segment: the friends' most played train items they have not seen."""
        out: dict[int, list[int]] = {}
        if not self.friend_tokens:
            return out
        for user, friends in (data.friends or {}).items():
            own = set(data.train[user].tolist()) | {int(data.valid[user])}
            counts = Counter(i for f in friends for i in data.train[f].tolist() if i not in own)
            top = [i for i, _ in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[: self.friend_items]]
            seg = list(self.friend_prefix)
            for i in top:
                seg += self.hist_tokens[i][:4]
            out[user] = [*seg[: self.friend_tokens - 1], self.sep]
        return out

    def with_data(self, data: PlatformData) -> TextInputs:
        """These inputs for another user set of the same catalogue (a user shard), without re-tokenising.

        The item tokens are shared; the friend segments are rebuilt from ``data``'s own
        users and friend links. ``self`` when ``data`` is this object's data.

        Raises
        ------
        ValueError
            If ``data`` has another catalogue size.
        """
        if data is self.data:
            return self
        if data.num_items != self.data.num_items:
            raise ValueError(f"{data.name}: {data.num_items} items, the tokenised catalogue has {self.data.num_items}")
        out = copy.copy(self)
        out.data = data
        out.friend_segment = self._friend_segments(data)
        return out

    def items(self, items: Sequence[int] | np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        """Token tensors of the given items' texts."""
        return pad([self.item_tokens[int(i)] for i in items], self.pad_id)

    def user_tokens(self, history: np.ndarray, user: int | None = None) -> list[int]:
        """Token ids of one user text built from ``history`` (oldest first)."""
        budget = self.user_max_tokens - 1 - self.friend_tokens
        toks = user_text_tokens([self.hist_tokens[int(i)] for i in history], budget, self.cls, self.sep)
        if self.friend_tokens and user is not None:
            toks += self.friend_segment.get(user, [])
        return toks

    def users(
        self, histories: Sequence[np.ndarray], users: Sequence[int] | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Token tensors of user texts, one per history (``users`` names them for the friend signal)."""
        names: Sequence[int | None] = [None] * len(histories) if users is None else users
        return pad([self.user_tokens(h, u) for h, u in zip(histories, names, strict=True)], self.pad_id)
