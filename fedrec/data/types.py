"""The common in-memory form every platform loader produces."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


class DataFormatError(ValueError):
    """A data file is malformed; the message names the file and the line."""


class DataMissingError(FileNotFoundError):
    """A data file is missing; the message says how to get it."""


@dataclass
class PlatformData:
    """One platform's catalogue and leave-one-out splits, in internal indices.

    Items and users are numbered ``0..n-1`` in the order of ``item_ids`` and
    ``user_ids`` (the raw identifiers from the files).

    Attributes
    ----------
    name : str
        Platform name (``"ecommerce"``, ``"video"``, ``"social"`` or a custom one).
    item_ids : list of str
        Raw item identifier of each internal item index.
    item_texts : list of str
        Public catalogue text of each item (the protocol's item text).
    user_ids : list of str
        Raw user identifier of each evaluated user.
    train : list of numpy.ndarray
        Per user, the train items in history order, oldest first ("most recent" last).
    valid : numpy.ndarray
        Per user, the validation item.
    test : numpy.ndarray
        Per user, the test item.
    sequential : bool
        True when the history order is a time order (next-item prediction makes
        sense); False when it is only a ranking (e.g. play counts).
    friends : dict of int to list of int, optional
        Undirected social graph over internal user indices, if the platform has one.
    """

    name: str
    item_ids: list[str]
    item_texts: list[str]
    user_ids: list[str]
    train: list[np.ndarray]
    valid: np.ndarray
    test: np.ndarray
    sequential: bool = True
    friends: dict[int, list[int]] | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        n_users, n_items = len(self.user_ids), len(self.item_ids)
        if len(self.item_texts) != n_items:
            raise ValueError(f"{self.name}: {len(self.item_texts)} item texts for {n_items} items")
        if not (len(self.train) == len(self.valid) == len(self.test) == n_users):
            raise ValueError(f"{self.name}: split lengths differ from the {n_users} users")

    @property
    def num_users(self) -> int:
        """Number of evaluated users."""
        return len(self.user_ids)

    @property
    def num_items(self) -> int:
        """Number of catalogue items."""
        return len(self.item_ids)

    @property
    def num_interactions(self) -> int:
        """Train, valid and test interactions together."""
        return int(sum(len(t) for t in self.train)) + 2 * self.num_users

    def history(self, user: int, split: str) -> np.ndarray:
        """Items a model may use when scoring ``split`` for ``user``, oldest first.

        Parameters
        ----------
        user : int
            Internal user index.
        split : {"valid", "test"}
            The split being scored: ``valid`` sees the train items; ``test`` sees the
            train items plus the valid item appended as the newest.
        """
        if split == "valid":
            return self.train[user]
        if split == "test":
            return np.append(self.train[user], self.valid[user])
        raise ValueError(f"split must be 'valid' or 'test', got {split!r}")

    def target(self, split: str) -> np.ndarray:
        """Per-user target items of ``split`` (``"valid"`` or ``"test"``)."""
        if split == "valid":
            return self.valid
        if split == "test":
            return self.test
        raise ValueError(f"split must be 'valid' or 'test', got {split!r}")

    def train_counts(self) -> np.ndarray:
        """Number of train interactions of each item (over all users)."""
        counts = np.zeros(self.num_items, dtype=np.int64)
        for items in self.train:
            np.add.at(counts, items, 1)
        return counts
