"""A quiet console: third-party notices off at the entry point, back with -v, nothing hidden after."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import warnings

import pytest

from fedrec.cli import main
from fedrec.cli.quiet import THIRD_PARTY_WARNINGS, pop_verbose, pythonwarnings, quiet_console
from fedrec.config import compose_config

TRANSFORMERS = "`is_gradient_checkpointing` is deprecated and will be removed in v6."
RAY_TIP = "Tip: In future versions of Ray, Ray will no longer override accelerator visible devices env var"
CHILD = f"import warnings; warnings.warn({TRANSFORMERS!r}, FutureWarning); warnings.warn('other', FutureWarning)"


def _seen(verbose: bool) -> list[str]:
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        with quiet_console(verbose):
            warnings.warn(TRANSFORMERS, FutureWarning, stacklevel=1)
            warnings.warn(RAY_TIP, FutureWarning, stacklevel=1)
            warnings.warn("a warning of fedrec's own", UserWarning, stacklevel=1)
            warnings.warn(TRANSFORMERS, UserWarning, stacklevel=1)  # same text, another category: kept
    return [f"{w.category.__name__}: {w.message}" for w in seen]


def test_the_listed_warnings_are_ignored_and_only_those() -> None:
    assert _seen(False) == ["UserWarning: a warning of fedrec's own", f"UserWarning: {TRANSFORMERS}"]
    assert len(_seen(True)) == 4


def test_filters_and_environment_are_restored(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PYTHONWARNINGS", "error::DeprecationWarning")
    filters = list(warnings.filters)
    with quiet_console():
        assert os.environ["PYTHONWARNINGS"].endswith(",error::DeprecationWarning")  # the user's filter wins
        assert len(warnings.filters) == len(filters) + len(THIRD_PARTY_WARNINGS)
    assert warnings.filters == filters and os.environ["PYTHONWARNINGS"] == "error::DeprecationWarning"
    monkeypatch.delenv("PYTHONWARNINGS")
    with quiet_console():
        pass
    assert "PYTHONWARNINGS" not in os.environ


def test_child_processes_inherit_the_filters() -> None:
    """Ray's actors and the benchmarks' child runs are processes of their own."""
    with quiet_console():
        quiet = subprocess.run([sys.executable, "-c", CHILD], capture_output=True, text=True, timeout=60)
    loud = subprocess.run([sys.executable, "-c", CHILD], capture_output=True, text=True, timeout=60)
    assert "is_gradient_checkpointing" not in quiet.stderr and "FutureWarning: other" in quiet.stderr
    assert "is_gradient_checkpointing" in loud.stderr
    assert pythonwarnings() == "ignore:`is_gradient_checkpointing` is deprecated:FutureWarning,ignore:Tip:FutureWarning"


class _Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


def test_flowers_run_simulation_banner_is_dropped() -> None:
    from flwr.supercore.logger import warn_deprecated_feature

    handler = _Records()
    flower = logging.getLogger("flwr")
    flower.addHandler(handler)
    try:
        with quiet_console():
            warn_deprecated_feature("The `run_simulation` function is deprecated and will be removed")
            warn_deprecated_feature("something else")
        warn_deprecated_feature("The `run_simulation` function is deprecated and will be removed")
    finally:
        flower.removeHandler(handler)
    assert len(handler.messages) == 2 and "something else" in handler.messages[0]
    assert "run_simulation" in handler.messages[1]  # outside the block it is shown again


def test_pop_verbose() -> None:
    assert pop_verbose(["simulate", "-v", "x=1", "--verbose"]) == (True, ["simulate", "x=1"])
    assert pop_verbose(["bench", "train", "-v"], anywhere=False) == (False, ["bench", "train", "-v"])
    assert pop_verbose(["-v", "bench", "train"], anywhere=False) == (True, ["bench", "train"])


def test_ray_actor_output_is_off_unless_verbose() -> None:
    from server.simulation import ray_backend_config

    assert ray_backend_config(compose_config(["model=tiny"]))["init_args"]["log_to_driver"] is False
    assert ray_backend_config(compose_config(["model=tiny", "verbose=true"]))["init_args"]["log_to_driver"] is True


@pytest.mark.parametrize("argv", [["simulate", "-v"], ["-v", "simulate"], ["simulate", "--verbose"]])
def test_v_sets_verbose_for_the_hydra_commands(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    assert main([*argv, "--cfg", "job", "model=tiny"]) == 0
    assert "verbose: true" in capsys.readouterr().out
    assert main(["simulate", "--cfg", "job"]) == 0
    assert "verbose: false" in capsys.readouterr().out
