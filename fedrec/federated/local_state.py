"""A client's platform-local state on its disk, one durable file per round, recovered from the last good copy.

Each round's state is ``<folder>/local-r<round>.pt``, written by
:func:`fedrec.io.save_torch_durable` (sha256-checksummed, atomically, file and folder
fsynced; a rewritten round keeps its previous good copy as ``.prev``). Loading the latest
round ``<= r`` checks the checksum: a corrupt or truncated file is logged by name and the
last good copy is used instead, its ``.prev`` first, else the newest earlier round's file.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path

import torch

from fedrec.io import CorruptStateError, load_torch_durable, save_torch_durable

log = logging.getLogger("fedrec.federated")


class LocalStateStore:
    """Round-tagged platform-local state of one client in a folder.

    Parameters
    ----------
    folder : path-like
        Where ``local-r<round>.pt`` files go (created on first save).
    """

    PATTERN = re.compile(r"local-r(\d+)\.pt$")

    def __init__(self, folder: str | Path) -> None:
        self.folder = Path(folder)

    def path(self, server_round: int) -> Path:
        """The file of a round's state."""
        return self.folder / f"local-r{server_round:05d}.pt"

    def rounds(self) -> list[int]:
        """Rounds with a saved state, ascending."""
        if not self.folder.is_dir():
            return []
        found = (self.PATTERN.search(p.name) for p in self.folder.iterdir())
        return sorted(int(m.group(1)) for m in found if m)

    def save(self, server_round: int, state: dict[str, torch.Tensor]) -> Path | None:
        """Durably save the state after ``server_round`` (nothing to save: no file)."""
        if not state:
            return None
        return save_torch_durable(self.path(server_round), state)

    def load(self, at_most: int) -> tuple[int, dict[str, torch.Tensor]] | None:
        """The newest good state of a round ``<= at_most``, or None.

        A corrupt newest file is logged (naming it) and the last good copy used: its
        ``.prev`` copy, else the previous round's state. With no good copy at all the
        client starts from its initial local state, logged as well.
        """
        rounds = [r for r in self.rounds() if r <= at_most]
        problems = []
        for r in reversed(rounds):
            try:
                state = load_torch_durable(self.path(r), lambda msg: log.warning("local state: %s", msg))
            except (CorruptStateError, RuntimeError, EOFError) as exc:  # checksum failed / unreadable payload
                problems.append(str(exc))
                log.warning("local state: %s; trying the round before", exc)
                continue
            if state is None:
                continue
            if problems:
                log.warning("local state: recovered the last good copy %s (round %d)", self.path(r), r)
            return r, state
        if problems:
            log.warning("local state: no good copy left in %s; starting from the initial local state", self.folder)
        return None
