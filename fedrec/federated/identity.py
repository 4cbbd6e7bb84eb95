"""Which node serves which client: the client a reply counts for is bound to its node, not to its claim.

A reply names the client it is for (its platform, or ``<platform>/<shard>``), but any node
can write any name there. The server therefore binds every client to one node id (the
transport's id of the sender: Flower's ``src_node_id``, which node authentication ties to
the node's registered key; ``local:<client>`` in process):

* with ``federation.nodes`` (node id -> client) the binding is the operator's registry:
  a node not listed, or a reply claiming another client than its node is registered for,
  is refused;
* with ``federation.nodes={}`` the first node to answer for a client is bound to it
  (first contact), and any other node claiming that client later is refused.

A reply naming a client the run does not have, or a second reply for a client in one
step, is refused too. A refused node is remembered: the transport sends it nothing more
(:meth:`NodeRegistry.admits`). Every refusal is logged with its reason. Nothing here knows
about Flower.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Protocol, TypeVar

LogFn = Callable[[int, str], None]


class Reply(Protocol):
    """What the registry reads from a reply: the sender's node id and the client it claims."""

    node: str
    platform: str  # "" when the reply claims nothing (an error reply)
    client: str

    @property
    def name(self) -> str:
        """The client the reply claims to be for."""


R = TypeVar("R", bound=Reply)


def local_node(client: str) -> str:
    """The node id of an in-process client (:mod:`fedrec.federated.local`)."""
    return f"local:{client}"


class NodeRegistry:
    """The binding of clients to node ids, and the refusals.

    Parameters
    ----------
    nodes : mapping
        ``federation.nodes``: node id -> client; empty = first-contact binding.
    clients : sequence of str
        The run's clients (:func:`fedrec.federated.shards.client_names`).
    log : callable
        ``log(level, message)``.

    Raises
    ------
    ValueError
        If ``nodes`` names a client the run does not have, or binds one client to two nodes.
    """

    def __init__(self, nodes: Mapping[str, str], clients: Sequence[str], log: LogFn) -> None:
        self.clients = list(clients)
        self.registered = bool(nodes)
        self.log = log
        self.bound: dict[str, str] = {}  # client -> node
        self.refused: dict[str, str] = {}  # node -> why it gets nothing more
        for node, client in nodes.items():
            client = str(client)
            if client not in self.clients:
                raise ValueError(
                    f"federation.nodes binds node {node} to {client!r}, which is not one of this run's clients "
                    f"{self.clients}"
                )
            if client in self.bound:
                raise ValueError(f"federation.nodes binds {client!r} to two nodes: {self.bound[client]} and {node}")
            self.bound[client] = str(node)
        self.node_of = {v: k for k, v in self.bound.items()}  # node -> client

    def admits(self, node: str) -> bool:
        """Whether ``node`` may receive messages: registered (or, first contact, not refused)."""
        node = str(node)
        if node in self.refused:
            return False
        return node in self.node_of or not self.registered

    def why_refused(self, node: str, claimed: str) -> tuple[str | None, bool]:
        """Why a reply from ``node`` claiming ``claimed`` is refused (None: admitted), and whether to refuse the node.

        An admitted claim of an unbound client binds it to ``node`` (first contact). An
        empty claim (a reply with no content, e.g. a client error) is the node's bound client.
        """
        node = str(node)
        if node in self.refused:
            return f"node {node} was refused before ({self.refused[node]})", False
        mine = self.node_of.get(node)
        if self.registered and mine is None:
            return f"node {node} is not registered in federation.nodes", True
        if not claimed:
            return (None, False) if mine else (f"the reply names no client and node {node} is bound to none", False)
        if mine is not None and mine != claimed:
            return f"node {node} is bound to {mine!r} but its reply claims {claimed!r}", False
        if claimed not in self.clients:
            return f"the reply claims {claimed!r}, which is not one of this run's clients {self.clients}", True
        owner = self.bound.get(claimed)
        if owner is not None and owner != node:
            return f"{claimed!r} is bound to node {owner}; node {node} claims it too", True
        if owner is None:
            self.bound[claimed], self.node_of[node] = node, claimed
            self.log(logging.INFO, f"node {node} bound to {claimed!r} (first contact)")
        return None, False

    def screen(self, when: str, replies: Iterable[R]) -> tuple[list[R], list[tuple[R, str]]]:
        """Split one step's replies into the admitted ones and the refused ones with their reasons.

        A node refused as a stranger or an impostor (not registered, claiming an unknown
        client or another node's) gets nothing more. A reply that claims nothing is taken
        for its node's bound client. Each refusal is logged as ``<when>: refused the reply
        of node <id> ...``.

        Parameters
        ----------
        when : str
            The step, for the log (``round 3``, ``test``).
        replies : iterable
            :class:`~fedrec.federated.messages.ClientUpdate` or
            :class:`~fedrec.federated.messages.ClientEvaluation`, in arrival order.

        Returns
        -------
        tuple
            ``(admitted, [(reply, reason), ...])``.
        """
        admitted: list[R] = []
        refused: list[tuple[R, str]] = []
        seen: set[str] = set()
        for r in replies:
            claimed = r.name
            reason, block = self.why_refused(r.node, claimed)
            problem = getattr(r, "problem", None)  # an update the transport found unusable: say why too
            if reason is not None and not claimed and problem:
                reason = f"{reason}: {problem}"
            if reason is None and not claimed:  # e.g. an error reply: it is for the node's bound client
                bound = self.node_of[str(r.node)]
                r.platform, r.client = bound.split("/")[0], bound if "/" in bound else ""
            if reason is None and r.name in seen:
                reason = f"a second reply for {r.name!r} in this step"
            if block:
                self.refused[str(r.node)] = reason or ""
            if reason is None:
                seen.add(r.name)
                admitted.append(r)
            else:
                refused.append((r, reason))
                self.log(logging.WARNING, f"{when}: refused the reply of node {r.node} (claims {claimed!r}): {reason}")
        return admitted, refused
