"""Canary users for the privacy audit: made, inserted into a task, and scored by the attack.

See :mod:`fedrec.privacy.audit` ("Canaries") for the method.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from fedrec.data.types import PlatformData
from fedrec.model.lower_cache import lower_states
from fedrec.task import Examples, PlatformTask, recent_ids

#: Views of the trained model the membership test can attack.
ATTACKS = ("full", "adapter")

#: What each attack's score is computed from (printed beside the results).
ATTACK_PARAMETERS = {
    "full": "LoRA adapter + platform head (item-ID embeddings): the platform's whole trained model; the head stays "
    "on the platform but DP-SGD covers it",
    "adapter": "LoRA adapter only (text score, frozen public backbone): exactly what the platform sends",
}


@dataclass
class Canaries:
    """Synthetic users for one platform, half of them members of the training set.

    Attributes
    ----------
    user_ids : list of str
        Raw ids (``"<prefix>-<k>"``), none equal to a real user's id.
    users : numpy.ndarray
        ``[2m]`` internal user indices, ``num_users + k`` (after the real users).
    histories : list of numpy.ndarray
        Per canary, ``history_len`` distinct catalogue items (oldest first).
    targets : numpy.ndarray
        ``[2m]`` per canary, an item outside its history: the audited example's target.
    member : numpy.ndarray
        ``[2m]`` bool, True for the canaries that are trained on.
    """

    user_ids: list[str]
    users: np.ndarray
    histories: list[np.ndarray]
    targets: np.ndarray
    member: np.ndarray

    def __len__(self) -> int:
        return len(self.user_ids)

    @property
    def members(self) -> np.ndarray:
        """Positions (into this object's arrays) of the member canaries."""
        return np.flatnonzero(self.member)

    @property
    def nonmembers(self) -> np.ndarray:
        """Positions of the non-member canaries."""
        return np.flatnonzero(~self.member)


def make_canaries(
    data: PlatformData, per_side: int, history_len: int, seed: int = 0, prefix: str = "canary"
) -> Canaries:
    """``2 * per_side`` canary users for ``data``'s catalogue, a random half of them members.

    Parameters
    ----------
    data : PlatformData
        The platform (only its catalogue size and user ids are read).
    per_side : int
        Members (and non-members), at least 2 (the audit splits each side in halves).
    history_len : int
        Items in each canary's history, ``1 <= history_len < num_items``.
    seed : int, default 0
        Seed of the histories, targets and the member draw (public randomness).
    prefix : str, default "canary"
        Raw id prefix; underscores are prepended until no real user id starts a collision.

    Returns
    -------
    Canaries

    Raises
    ------
    ValueError
        On ``per_side < 2`` or a history length the catalogue cannot supply.
    """
    if per_side < 2:
        raise ValueError(f"audit needs at least 2 canaries per side, got {per_side}")
    if not 1 <= history_len < data.num_items:
        raise ValueError(
            f"canary history length must be in [1, {data.num_items - 1}] (catalogue of {data.name} has "
            f"{data.num_items} items), got {history_len}"
        )
    rng = np.random.default_rng(seed)
    n = 2 * per_side
    picks = [rng.choice(data.num_items, size=history_len + 1, replace=False).astype(np.int64) for _ in range(n)]
    member = np.zeros(n, dtype=bool)
    member[rng.permutation(n)[:per_side]] = True
    taken = set(data.user_ids)
    while any(f"{prefix}-{k}" in taken for k in range(n)):
        prefix = "_" + prefix
    return Canaries(
        user_ids=[f"{prefix}-{k}" for k in range(n)],
        users=data.num_users + np.arange(n, dtype=np.int64),
        histories=[p[:-1] for p in picks],
        targets=np.array([p[-1] for p in picks], dtype=np.int64),
        member=member,
    )


def canary_examples(canaries: Canaries, per_canary: int) -> Examples:
    """Training examples of the member canaries.

    A canary's sequence is its history followed by its target; like a real user on a
    time-ordered platform, its examples are the last ``per_canary`` positions ``t >= 1``
    (item ``t`` predicted from the items before it). The last one -- the target from the
    whole history -- is always among them: it is the audited example.

    Parameters
    ----------
    canaries : Canaries
        The canaries (only members get examples).
    per_canary : int
        Examples per member canary, ``>= 1``.
    """
    if per_canary < 1:
        raise ValueError(f"examples per canary must be >= 1, got {per_canary}")
    users, targets, hists = [], [], []
    for k in canaries.members:
        seq = np.append(canaries.histories[k], canaries.targets[k])
        for t in range(max(1, len(seq) - per_canary), len(seq)):
            users.append(int(canaries.users[k]))
            targets.append(int(seq[t]))
            hists.append(seq[:t])
    return Examples(np.array(users, dtype=np.int64), np.array(targets, dtype=np.int64), hists)


def _pad_columns(t: torch.Tensor, length: int) -> torch.Tensor:
    """Right-pad dimension 1 of ``t`` with zeros to ``length``."""
    if t.shape[1] >= length:
        return t
    pad = torch.zeros((t.shape[0], length - t.shape[1], *t.shape[2:]), dtype=t.dtype)
    return torch.cat([t, pad], dim=1)


def _join(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    length = max(a.shape[1], b.shape[1])
    return torch.cat([_pad_columns(a, length), _pad_columns(b, length)])


def insert_canaries(task: PlatformTask, canaries: Canaries, per_canary: int) -> int:
    """Append the member canaries' training examples to ``task`` (in place); returns the rows added.

    The examples, their user-text tokens and their frozen lower-layer states are appended
    to the task's (computed here, not cached on disk); the task's ``data`` -- and so its
    evaluation -- is unchanged. The DP sampler and :func:`~fedrec.privacy.dpsgd.count_users`
    then see ``num_users + m`` users.

    Raises
    ------
    ValueError
        If the task already holds examples of a user id the canaries use (inserted twice,
        or ids colliding with real users).
    """
    if np.isin(canaries.users, task.examples.users).any() or canaries.users.min() < task.data.num_users:
        raise ValueError("canary user indices collide with users already in the task (canaries inserted twice?)")
    ex = canary_examples(canaries, per_canary)
    tok, mask = task.inputs.users(ex.histories, ex.users.tolist())
    hidden = lower_states(task.encoder, tok, mask, progress=False)
    old = task.examples
    task.examples = Examples(
        np.concatenate([old.users, ex.users]),
        np.concatenate([old.targets, ex.targets]),
        [*old.histories, *ex.histories],
    )
    task.user_tok = _join(task.user_tok, tok)
    task.user_mask = _join(task.user_mask, mask)
    task.user_hidden = _join(task.user_hidden, hidden)
    return len(ex)


@dataclass
class CanaryInputs:
    """Model inputs of every canary's audited example (target from the whole history)."""

    hidden: torch.Tensor
    mask: torch.Tensor
    hist_ids: torch.Tensor
    hist_mask: torch.Tensor


def canary_inputs(task: PlatformTask, canaries: Canaries) -> CanaryInputs:
    """Lower-layer states and ID histories of the canaries' audited examples.

    The lower layers are frozen (no adapters), so these are computed once and serve
    every trained model.
    """
    tok, mask = task.inputs.users(canaries.histories, canaries.users.tolist())
    hidden = lower_states(task.encoder, tok, mask, progress=False)
    hist_ids, hist_mask = recent_ids(canaries.histories, task.history_ids)
    return CanaryInputs(hidden, mask, hist_ids, hist_mask)


@torch.no_grad()
def canary_losses(
    task: PlatformTask,
    canaries: Canaries,
    attack: str = "full",
    inputs: CanaryInputs | None = None,
    batch_size: int = 256,
) -> np.ndarray:
    """Full-catalogue softmax loss of each canary's target given its history, under ``task``'s model.

    The candidates are the whole catalogue minus the canary's history items (as in
    evaluation).

    Parameters
    ----------
    task : PlatformTask
        The (trained) model and catalogue.
    canaries : Canaries
        All canaries (members and non-members).
    attack : {"full", "adapter"}, default "full"
        ``full`` scores with the text and the ID terms; ``adapter`` with the text term
        only (what the LoRA adapter alone determines).
    inputs : CanaryInputs, optional
        Precomputed :func:`canary_inputs` (default: computed here).
    batch_size : int, default 256
        Canaries per forward pass.

    Returns
    -------
    numpy.ndarray
        ``[2m]`` float64 losses, in the canaries' order.
    """
    if attack not in ATTACKS:
        raise ValueError(f"attack must be one of {list(ATTACKS)}, got {attack!r}")
    inputs = inputs if inputs is not None else canary_inputs(task, canaries)
    was_training = task.model.training
    task.model.eval()
    index = task.refresh_index()
    out = []
    for start in range(0, len(canaries), batch_size):
        sl = slice(start, min(len(canaries), start + batch_size))
        u_text, u_id = task.model.user_vectors(
            inputs.hidden[sl], inputs.mask[sl], inputs.hist_ids[sl], inputs.hist_mask[sl]
        )
        scores = task.model.scores(u_text.float(), None if attack == "adapter" else u_id, index.float()).double()
        rows = torch.arange(scores.shape[0])
        target = torch.as_tensor(canaries.targets[sl])
        target_scores = scores[rows, target]
        for r, k in enumerate(range(sl.start, sl.stop)):
            scores[r, torch.as_tensor(canaries.histories[k])] = -math.inf
        out.append((torch.logsumexp(scores, 1) - target_scores).numpy())
    task.model.train(was_training)
    return np.concatenate(out)
