"""What the server receives from its clients: training and evaluation replies, decoded.

The transports (Flower's grid in ``server/app.py``, or in process in
:mod:`fedrec.federated.local`) turn each reply into one of these before the
:class:`~fedrec.federated.server.Coordinator` validates and uses it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass
class ClientUpdate:
    """One client's training reply as the server received it.

    Attributes
    ----------
    node : str
        Node identifier (for logs).
    platform : str
        The platform the client serves.
    state : dict or None
        The adapter arrays (None if they could not be decoded).
    num_examples : object
        Reported training examples (the aggregation weight; validated).
    metrics : dict
        Other reported metrics (train loss, ...).
    nbytes : int
        Bytes of the received arrays.
    problem : str, optional
        Set when the transport already found the reply unusable.
    refused : str, optional
        The client declined to train (its privacy budget), with this reason.
    client : str, default ""
        The client's name (``video/3`` for a user shard); "" = the platform's name.
    """

    node: str
    platform: str
    state: dict[str, np.ndarray] | None
    num_examples: object
    metrics: dict[str, float] = field(default_factory=dict)
    nbytes: int = 0
    problem: str | None = None
    refused: str | None = None
    client: str = ""

    @property
    def name(self) -> str:
        """The client's name (its platform unless it serves a user shard)."""
        return self.client or self.platform


@dataclass
class ClientEvaluation:
    """One client's evaluation reply: its platform, metrics (loss, HR@10, ...) and name (``""`` = the platform)."""

    node: str
    platform: str
    metrics: dict[str, float]
    client: str = ""

    @property
    def name(self) -> str:
        """The client's name (its platform unless it serves a user shard)."""
        return self.client or self.platform
