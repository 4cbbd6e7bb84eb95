"""A quiet console: the third-party notices that say nothing to a fedrec user, kept off it.

:func:`quiet_console` wraps every ``fedrec`` command (:func:`fedrec.cli.main.main`); ``-v``
(``--verbose``) turns it off. Inside it:

* the Python warnings of :data:`THIRD_PARTY_WARNINGS` are ignored, in this process and,
  through ``PYTHONWARNINGS``, in the processes it starts (Ray's actors, the benchmarks' and
  the experiments' child runs);
* Flower's log lines of :data:`FLOWER_NOTICES` (the ``run_simulation`` deprecation banner)
  are dropped.

Ray's per-actor output (``(ClientAppActor pid=...)`` lines) is off unless ``verbose=true``
(:func:`server.simulation.ray_backend_config`), which ``-v`` sets for the Hydra commands.
Everything is restored when the command returns: nothing is hidden globally (the tests
see every warning).
"""

from __future__ import annotations

import logging
import os
import re
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

#: (category, start of the message) of the third-party warnings ignored
THIRD_PARTY_WARNINGS: tuple[tuple[type[Warning], str], ...] = (
    # transformers 5.23, called by peft on every get_peft_model (driver and every Ray actor)
    (FutureWarning, "`is_gradient_checkpointing` is deprecated"),
    # ray 2.55 at ray.init, about accelerator env vars (fedrec reserves no GPU)
    (FutureWarning, "Tip: In future versions of Ray"),
)
#: parts of Flower log messages dropped
FLOWER_NOTICES = ("The `run_simulation` function is deprecated",)
#: the flags that keep everything on the console
VERBOSE_FLAGS = ("-v", "--verbose")


def pop_verbose(argv: Sequence[str], anywhere: bool = True) -> tuple[bool, list[str]]:
    """Whether ``argv`` asks for verbose output, and ``argv`` without the flag.

    Parameters
    ----------
    argv : sequence of str
        Command-line arguments.
    anywhere : bool, default True
        Take the flag wherever it stands; otherwise only as the first argument (before a
        command whose own parser may use ``-v``).
    """
    args = list(argv)
    if anywhere:
        kept = [a for a in args if a not in VERBOSE_FLAGS]
        return len(kept) != len(args), kept
    if args and args[0] in VERBOSE_FLAGS:
        return True, args[1:]
    return False, args


def pythonwarnings(existing: str = "") -> str:
    """``PYTHONWARNINGS`` for the child processes: ignore :data:`THIRD_PARTY_WARNINGS`, then ``existing``.

    The field syntax ``action:message:category`` cannot hold a colon, so a message is
    cut at its first one (it still matches as the start of the message). A filter given
    in ``existing`` comes last and wins where both match.
    """
    ours = [f"ignore:{msg.split(':')[0]}:{cat.__name__}" for cat, msg in THIRD_PARTY_WARNINGS]
    return ",".join([*ours, existing] if existing else ours)


class _DropFlowerNotices(logging.Filter):
    """Drops the Flower log records whose message contains one of :data:`FLOWER_NOTICES`."""

    def filter(self, record: logging.LogRecord) -> bool:
        text = record.getMessage()
        return not any(n in text for n in FLOWER_NOTICES)


@contextmanager
def quiet_console(verbose: bool = False) -> Iterator[None]:
    """Keep the third-party notices off the console while the block runs (no-op when ``verbose``)."""
    if verbose:
        yield
        return
    flower = logging.getLogger("flwr")
    drop = _DropFlowerNotices()
    before = os.environ.get("PYTHONWARNINGS")
    with warnings.catch_warnings():
        for category, message in THIRD_PARTY_WARNINGS:
            warnings.filterwarnings("ignore", message=re.escape(message), category=category)
        os.environ["PYTHONWARNINGS"] = pythonwarnings(before or "")
        flower.addFilter(drop)
        try:
            yield
        finally:
            flower.removeFilter(drop)
            if before is None:
                os.environ.pop("PYTHONWARNINGS", None)
            else:
                os.environ["PYTHONWARNINGS"] = before
