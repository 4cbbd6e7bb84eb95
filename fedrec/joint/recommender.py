"""``fedrec.Recommender``: score and recommend with an exported joint model, on raw text.

>>> rec = Recommender.load("outputs/simulate/<run>/joint_model")           # doctest: +SKIP
>>> rec.recommend(["The Matrix (1999)", "Alien (1979)"], ["Heat (1995)", "Babe (1995)"], k=1)  # doctest: +SKIP

Works for any platform, also one never seen in training (zero-shot: the text part of
the score only); for a platform in the joint model, :meth:`Recommender.recommend_items`
ranks its whole catalogue with the stored item index and, in hybrid mode, its
platform-local item-ID embeddings, exactly as fedrec's evaluation scores.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from fedrec.joint.export import MANIFEST
from fedrec.joint.mmr import mmr
from fedrec.model.backbone import autocast, mean_pool
from fedrec.model.inputs import item_text_tokens, pad, user_text_tokens


@dataclass
class Recommendation:
    """One recommended item: its position among the candidates, id, text and score."""

    index: int
    item_id: str
    text: str
    score: float


class Recommender:
    """An exported joint model (see :mod:`fedrec.joint.export`), ready to score.

    Parameters
    ----------
    folder : path-like
        The joint model folder.
    batch_size : int, default 256
        Texts per forward pass.
    """

    def __init__(self, folder: str | Path, batch_size: int = 256) -> None:
        from transformers import AutoModel, AutoTokenizer

        self.folder = Path(folder)
        path = self.folder / MANIFEST
        if not path.is_file():
            raise FileNotFoundError(
                f"{self.folder} is not a fedrec joint model: no {MANIFEST} (make one with fedrec export)"
            )
        self.manifest: dict[str, Any] = json.loads(path.read_text())
        self.batch_size = batch_size
        self.tokenizer = AutoTokenizer.from_pretrained(str(self.folder / "model"))
        self.user_model = AutoModel.from_pretrained(str(self.folder / "model"), add_pooling_layer=False).eval()
        items = self.folder / "item_model"
        self.item_model = (
            AutoModel.from_pretrained(str(items), add_pooling_layer=False).eval() if items.is_dir() else self.user_model
        )
        for model in {id(self.user_model): self.user_model, id(self.item_model): self.item_model}.values():
            model.requires_grad_(False)
        self.cls, self.sep = int(self.tokenizer.cls_token_id), int(self.tokenizer.sep_token_id)
        self.pad_id = int(self.tokenizer.pad_token_id or 0)
        self._platforms: dict[str, dict[str, Any]] = {}

    @classmethod
    def load(cls, folder: str | Path, batch_size: int = 256) -> Recommender:
        """Load a joint model folder (``fedrec export`` writes one)."""
        return cls(folder, batch_size)

    @property
    def platforms(self) -> list[str]:
        """Platforms with a stored item index."""
        return list(self.manifest["platforms"])

    # -- text towers ----------------------------------------------------------------------
    def _tokens(self, texts: Sequence[str]) -> list[list[int]]:
        return list(self.tokenizer(list(texts), add_special_tokens=False, truncation=False)["input_ids"])

    @torch.no_grad()
    def _encode(self, model: Any, rows: list[list[int]]) -> torch.Tensor:
        out = []
        for start in range(0, len(rows), self.batch_size):
            ids, mask = pad(rows[start : start + self.batch_size], self.pad_id)
            with autocast(bool(self.manifest["bf16"])):
                hidden = model(input_ids=ids, attention_mask=mask, token_type_ids=torch.zeros_like(ids))
            vec = mean_pool(hidden.last_hidden_state.float(), mask)
            out.append(F.normalize(vec, dim=-1) if self.manifest["score"] == "cosine" else vec)
        return torch.cat(out) if out else torch.zeros(0, int(self.user_model.config.hidden_size))

    def embed(self, texts: Sequence[str]) -> torch.Tensor:
        """Item-side text vectors ``[n, d]`` of raw item texts (normalised for cosine scoring)."""
        m = self.manifest
        rows = [item_text_tokens(t, m["item_max_tokens"], self.cls, self.sep) for t in self._tokens(texts)]
        return self._encode(self.item_model, rows)

    def embed_histories(self, histories: Sequence[Sequence[str]]) -> torch.Tensor:
        """User-side text vectors ``[n, d]`` (times the logit scale) of raw histories, each oldest first."""
        m = self.manifest
        rows = []
        for history in histories:
            toks = [t[: m["user_item_tokens"]] for t in self._tokens(history)] if history else []
            rows.append(user_text_tokens(toks, m["user_max_tokens"] - 1, self.cls, self.sep))
        return float(m["scale"]) * self._encode(self.user_model, rows)

    def score(self, history: Sequence[str], candidates: Sequence[str]) -> np.ndarray:
        """Text scores ``[len(candidates)]`` of raw candidate texts for a raw history (zero-shot)."""
        return (self.embed_histories([history]) @ self.embed(candidates).T)[0].numpy()

    def recommend(
        self, history: Sequence[str], candidates: Sequence[str], k: int = 10, mmr_lambda: float = 1.0
    ) -> list[Recommendation]:
        """Top-``k`` of raw candidate texts for a raw history (zero-shot; MMR with ``mmr_lambda < 1``)."""
        vectors = self.embed(candidates)
        scores = (self.embed_histories([history]) @ vectors.T)[0].numpy()
        order = self._rerank(scores, vectors, np.arange(len(candidates)), k, mmr_lambda)
        return [Recommendation(int(i), str(i), candidates[i], float(scores[i])) for i in order]

    # -- a platform of the joint model -----------------------------------------------------
    def _platform(self, name: str) -> dict[str, Any]:
        if name not in self._platforms:
            if name not in self.manifest["platforms"]:
                raise KeyError(f"platform {name!r} is not in this joint model; it has {self.platforms}")
            folder = self.folder / "platforms" / name
            items = json.loads((folder / "items.json").read_text())
            local = folder / "local.pt"
            state = torch.load(local, weights_only=True) if local.is_file() else None
            raw = self._tokens(items["texts"])
            self._platforms[name] = {
                "ids": items["ids"],
                "texts": items["texts"],
                "position": {str(i): n for n, i in enumerate(items["ids"])},
                "index": torch.load(folder / "index.pt", weights_only=True),
                "local": state,
                "hist_tokens": [r[: self.manifest["user_item_tokens"]] for r in raw],
            }
        return self._platforms[name]

    def item_positions(self, platform: str, item_ids: Sequence[str]) -> np.ndarray:
        """Catalogue positions of raw item ids of ``platform``.

        Raises
        ------
        KeyError
            Naming the first unknown item id.
        """
        pos = self._platform(platform)["position"]
        missing = [i for i in item_ids if str(i) not in pos]
        if missing:
            raise KeyError(f"item {missing[0]!r} is not in platform {platform!r}'s catalogue")
        return np.array([pos[str(i)] for i in item_ids], dtype=np.int64)

    def score_items(self, platform: str, histories: Sequence[np.ndarray]) -> torch.Tensor:
        """Scores ``[len(histories), n_items]`` of ``platform``'s catalogue for histories of item positions."""
        p, m = self._platform(platform), self.manifest
        rows = [
            user_text_tokens([p["hist_tokens"][int(i)] for i in h], m["user_max_tokens"] - 1, self.cls, self.sep)
            for h in histories
        ]
        scores = float(m["scale"]) * self._encode(self.user_model, rows) @ p["index"].T
        if p["local"] is not None:
            n = int(m["history_ids"])
            ids, mask = pad([np.asarray(h)[-n:].tolist() if n > 0 else [] for h in histories])
            hist = F.embedding(ids, p["local"]["history_id.weight"])
            w = mask.unsqueeze(-1).float()
            user_id = (hist * w).sum(1) / w.sum(1).clamp_min(1.0)
            scores = scores + user_id @ p["local"]["item_id.weight"].T
        return scores

    def recommend_items(
        self,
        platform: str,
        history: Sequence[int] | np.ndarray,
        k: int = 10,
        exclude: Sequence[int] | None = None,
        mmr_lambda: float = 1.0,
        pool: int = 100,
    ) -> list[Recommendation]:
        """Top-``k`` of ``platform``'s catalogue for a history of item positions (oldest first).

        Parameters
        ----------
        platform : str
            A platform of the joint model.
        history : sequence of int
            Catalogue positions (see :meth:`item_positions`), oldest first.
        k : int, default 10
            Items to return.
        exclude : sequence of int, optional
            Positions never recommended (default: the history itself).
        mmr_lambda : float, default 1.0
            1 = by score; lower re-ranks the top ``pool`` items for diversity (MMR).
        pool : int, default 100
            Candidates MMR re-ranks.
        """
        p = self._platform(platform)
        scores = self.score_items(platform, [np.asarray(history, dtype=np.int64)])[0]
        banned = np.asarray(history if exclude is None else exclude, dtype=np.int64)
        scores[torch.as_tensor(banned)] = -torch.inf
        top = torch.topk(scores, min(max(k, pool if mmr_lambda < 1.0 else k), int(torch.isfinite(scores).sum())))
        cand = top.indices.numpy()
        order = self._rerank(top.values.numpy(), p["index"][cand], cand, k, mmr_lambda)
        return [Recommendation(int(i), str(p["ids"][i]), str(p["texts"][i]), float(scores[i])) for i in order]

    @staticmethod
    def _rerank(scores: np.ndarray, vectors: torch.Tensor, ids: np.ndarray, k: int, mmr_lambda: float) -> list[int]:
        """``ids`` of the top ``k`` (MMR over ``vectors``' cosine similarity when ``mmr_lambda < 1``)."""
        v = F.normalize(vectors.float(), dim=-1)
        sim = (v @ v.T).numpy() if mmr_lambda < 1.0 else np.zeros((len(ids), len(ids)))
        return [int(ids[j]) for j in mmr(np.asarray(scores), sim, k, mmr_lambda)]
