"""The quorum and the wait deadline: a round goes on without a dead node, or the run stops saying why.

Before each round's training the server waits for the nodes it wants (every admitted
connected node, up to the number of clients) until ``federation.wait_timeout``; at the
deadline it goes on with the nodes that are there if they are at least
``federation.min_clients`` (0 = every client), else it raises :class:`QuorumError`. The
round's evaluation never waits again: it goes to the nodes connected then. A dead node's
rounds go on without it; once it is back (connected again) it is sampled again.

Nothing here knows about Flower: the transport passes how to list the connected nodes.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Hashable, Iterable
from typing import TypeVar

LogFn = Callable[[int, str], None]
N = TypeVar("N", bound=Hashable)


class QuorumError(RuntimeError):
    """Fewer nodes than ``federation.min_clients`` were connected at the wait deadline."""


def wait_for_quorum(
    connected: Callable[[], Iterable[N]],
    wanted: int,
    minimum: int,
    timeout: float,
    when: str,
    log: LogFn,
    poll: float = 1.0,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> list[N]:
    """Wait until ``wanted`` nodes are connected or ``timeout`` seconds have passed; the nodes there.

    Parameters
    ----------
    connected : callable
        Lists the connected nodes that may take part (already without refused ones).
    wanted : int
        Nodes the server would like (every client).
    minimum : int
        The quorum: fewer at the deadline stops the run.
    timeout : float
        ``federation.wait_timeout`` in seconds.
    when : str
        The step, for messages (``round 3``).
    log : callable
        ``log(level, message)``.
    poll, clock, sleep
        Polling interval and time functions (tests pass fakes).

    Returns
    -------
    list
        The connected nodes (at least ``minimum``), sorted by their string form.

    Raises
    ------
    QuorumError
        Naming how many nodes were connected and how many were needed.
    """
    deadline = clock() + timeout
    logged = False
    while True:
        nodes = sorted(set(connected()), key=str)
        if len(nodes) >= wanted:
            return nodes
        if clock() >= deadline:
            break
        if not logged:
            log(logging.INFO, f"{when}: waiting up to {timeout:g}s for nodes: {len(nodes)} of {wanted} connected")
            logged = True
        sleep(min(poll, max(0.0, deadline - clock())))
    if len(nodes) < minimum:
        raise QuorumError(
            f"{when}: {len(nodes)} node(s) connected after waiting {timeout:g}s (federation.wait_timeout), "
            f"{minimum} needed (federation.min_clients); connected: {nodes}"
        )
    log(
        logging.WARNING,
        f"{when}: going on with {len(nodes)} of {wanted} nodes after {timeout:g}s "
        f"(quorum federation.min_clients={minimum})",
    )
    return nodes
