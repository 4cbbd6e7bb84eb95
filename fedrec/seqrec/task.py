"""One platform's sequence-recommendation task: rows, training of both parts, evaluation.

A :class:`SeqTask` is what a federated client holds for the sequence model: its private data,
the catalogue's text vectors (:class:`~fedrec.seqrec.text.ItemText`), the shared part it trains
and sends (:class:`~fedrec.seqrec.model.SharedSequenceModel`, with the LoRA adapter when it is
trained) and the personal model it serves (:class:`~fedrec.seqrec.model.PersonalModel`).
It knows nothing of Flower.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

import numpy as np
import torch

from fedrec.data.types import PlatformData
from fedrec.evaluate import evaluate_ranking_variants
from fedrec.seqrec.model import PersonalModel, SharedSequenceModel, shared_scores
from fedrec.seqrec.prior import Prior, blend
from fedrec.seqrec.rows import Rows, holdout_rows, left_pad, sequential_rows
from fedrec.seqrec.text import ItemText
from fedrec.steps import Step, StepHooks, StepStats, run_steps


class SeqTask:
    """A platform's data, item text, shared part and personal model.

    Parameters
    ----------
    data : PlatformData
        The platform (private to it).
    text : ItemText
        The catalogue's text vectors.
    shared : SharedSequenceModel
        The shared part (trained in place; its state is what the platform sends).
    holdout : float, default 0.2
        Order-free platforms: share of a history held out as a row's targets.
    fresh_items : int, default 256
        With the adapter trained: items per step whose text vectors carry its gradient.
    refresh_steps : int, default 20
        With the adapter trained: rebuild the item index every this many steps.
    """

    def __init__(
        self,
        data: PlatformData,
        text: ItemText,
        shared: SharedSequenceModel,
        holdout: float = 0.2,
        fresh_items: int = 256,
        refresh_steps: int = 20,
    ) -> None:
        self.data, self.text, self.shared = data, text, shared
        self.holdout, self.fresh_items, self.refresh_steps = holdout, fresh_items, refresh_steps
        self.personal: PersonalModel | None = None
        self.prior: Prior | None = None  # a platform-local prior (fedrec.seqrec.prior), blended when serving
        self.trainable_users = np.array([u for u in range(data.num_users) if len(data.train[u]) >= 2], dtype=np.int64)

    @property
    def name(self) -> str:
        """Platform name."""
        return self.data.name

    # -- rows -------------------------------------------------------------------------
    def rows(self, users: Sequence[int] | np.ndarray, rng: np.random.Generator) -> Rows:
        """Training rows of ``users`` (one each, all of the user's targets).

        An order-free row's split is drawn from its own generator, seeded from ``rng`` (one
        draw per batch, public randomness) and the user.
        """
        hist = [self.data.train[u] for u in users]
        if self.data.sequential:
            return sequential_rows(hist, self.shared.max_len)
        batch_seed = int(rng.integers(2**31))
        return holdout_rows(hist, self.shared.max_len, self.holdout, [(batch_seed, int(u)) for u in users])

    def epoch_batches(self, batch_size: int, epochs: float, rng: np.random.Generator) -> list[np.ndarray]:
        """Shuffled batches of users covering ``epochs`` passes (a fraction takes the first batches of a pass)."""
        out: list[np.ndarray] = []
        whole = int(np.floor(epochs))
        for e in range(whole + (1 if epochs > whole else 0)):
            perm = rng.permutation(self.trainable_users)
            chunk = [perm[s : s + batch_size] for s in range(0, len(perm), batch_size)]
            if e == whole:
                chunk = chunk[: max(1, round(len(chunk) * (epochs - whole)))]
            out += chunk
        return out

    # -- text -------------------------------------------------------------------------
    def step_text(self, rows: Rows, rng: np.random.Generator) -> torch.Tensor:
        """The text vectors of a step: the index, with the adapter's gradient through a sample of items.

        Half of ``fresh_items`` are drawn from the rows' own items (inputs and targets), half
        from the rest of the catalogue (public randomness), each gradient scaled by the
        inverse of its sampling probability: an unbiased estimate of the gradient through
        every item's text vector, the positives' pull and the catalogue's push alike.
        """
        if not self.text.adapter:
            return self.text.index()
        own = torch.unique(torch.cat([rows.ids[rows.mask], rows.targets[rows.target_mask]]))
        half = max(1, self.fresh_items // 2)
        pick_own = own if len(own) <= half else own[torch.from_numpy(rng.choice(len(own), half, replace=False))]
        others = np.setdiff1d(np.arange(self.text.num_items), own.numpy())
        n_other = min(len(others), self.fresh_items - len(pick_own))
        pick_other = torch.from_numpy(rng.choice(others, n_other, replace=False)) if n_other else own[:0]
        weights = torch.cat(
            [
                torch.full((len(pick_own),), len(own) / max(1, len(pick_own))),
                torch.full((len(pick_other),), len(others) / max(1, n_other)),
            ]
        )
        return self.text.with_fresh(torch.cat([pick_own, pick_other]), weights)

    # -- training ---------------------------------------------------------------------
    def train_shared(
        self, optimizer: torch.optim.Optimizer, epochs: float, batch_size: int, rng: np.random.Generator
    ) -> StepStats:
        """Train the shared part (and the adapter, when it is trained) on the text-path loss.

        ``seconds`` includes the adapter's last index refresh.
        """
        start = time.perf_counter()
        self.shared.train()

        def forward(users: np.ndarray) -> Step:
            rows = self.rows(users, rng)
            return Step(self.shared.loss(self.step_text(rows, rng), rows), int(rows.num_targets.sum()))

        def after(step: int, users: np.ndarray, result: Step) -> None:
            if self.text.adapter and (step + 1) % self.refresh_steps == 0:
                self.text.refresh()

        stats = run_steps(self.epoch_batches(batch_size, epochs, rng), forward, optimizer, StepHooks(after=after))
        if self.text.adapter and stats.steps:
            self.text.refresh()
        self.shared.eval()
        stats.seconds = time.perf_counter() - start
        return stats

    def personalize(
        self, epochs: float, batch_size: int, lr: float, rng: np.random.Generator, resume: bool = False
    ) -> StepStats:
        """Fit the personal model: a copy of the shared part with ID embeddings added, on this platform alone.

        ``resume`` continues the current personal model and its optimiser (training in chunks
        with a validation check between them); otherwise it starts from the shared part.
        """
        text = self.text.index()
        if not resume or self.personal is None:
            self.personal = PersonalModel(self.shared, self.data.num_items)
            self._personal_opt = torch.optim.Adam(self.personal.parameters(), lr=lr)
        personal = self.personal
        personal.train()

        def forward(users: np.ndarray) -> Step:
            rows = self.rows(users, rng)
            return Step(personal.loss(text, rows), int(rows.num_targets.sum()))

        stats = run_steps(self.epoch_batches(batch_size, epochs, rng), forward, self._personal_opt)
        personal.eval()
        return stats

    # -- evaluation -------------------------------------------------------------------
    @torch.no_grad()
    def scores(self, histories: Sequence[np.ndarray], which: str = "personal") -> torch.Tensor:
        """``[B, N]`` scores after each history: the personal model's, or the shared part's alone (``"shared"``)."""
        ids, mask = left_pad(histories, self.shared.max_len)
        text = self.text.index()
        if which in ("personal", "served") and self.personal is not None:
            self.personal.eval()
            return self.personal.scores(text, ids, mask, self.data.sequential)
        self.shared.eval()
        return shared_scores(self.shared, text, ids, mask, self.data.sequential)

    @torch.no_grad()
    def evaluate(
        self, split: str, which: str = "personal", users: Sequence[int] | None = None, batch_size: int = 256
    ) -> dict[str, float]:
        """Full-ranking metrics and the mean softmax loss on ``split`` (PROTOCOL.md).

        ``which``: ``"shared"`` (the text path), ``"personal"`` (the personal model, or the
        shared part before one is fitted) or ``"served"`` (the personal model blended with
        the platform's prior at its chosen weight, :mod:`fedrec.seqrec.prior`).
        """
        weight = self.prior.weight if which == "served" and self.prior is not None else None
        return self.evaluate_blends(split, [weight], which, users, batch_size)[weight]

    @torch.no_grad()
    def evaluate_blends(
        self,
        split: str,
        weights: Sequence[float | None],
        which: str = "personal",
        users: Sequence[int] | None = None,
        batch_size: int = 256,
    ) -> dict[float | None, dict[str, float]]:
        """:meth:`evaluate` of the model blended with the prior at each weight (None: no prior), in one pass."""
        res = self.evaluate_variants(split, [(which, w) for w in weights], users, batch_size)
        return {w: res[(which, w)] for w in weights}

    @torch.no_grad()
    def evaluate_variants(
        self,
        split: str,
        variants: Sequence[tuple[str, float | None]],
        users: Sequence[int] | None = None,
        batch_size: int = 256,
    ) -> dict[tuple[str, float | None], dict[str, float]]:
        """:meth:`evaluate` of several ``(which, prior blend weight or None)`` variants in one pass over the users.

        Each model (``which``) scores a batch once, the prior once, and every variant is ranked
        from those scores (:func:`fedrec.evaluate.evaluate_ranking_variants`): e.g. the served
        model, the personal model alone and the shared part alone.
        """
        variants = list(variants)
        models = list(dict.fromkeys(which for which, _ in variants))

        def score(chunk: Sequence[int], split: str) -> dict[tuple[str, float | None], torch.Tensor]:
            hist = [self.data.history(u, split) for u in chunk]
            scored = {which: self.scores(hist, which) for which in models}
            prior = self.prior.scores(chunk, split) if self.prior is not None and any(w for _, w in variants) else None
            return {
                (which, w): scored[which] if w is None or prior is None else blend(scored[which], prior, float(w))
                for which, w in variants
            }

        return evaluate_ranking_variants(self.data, split, score, variants, batch_size, users, loss=True)
