"""A ClientApp whose ``video`` client sends a corrupt update: mis-shaped in round 1, NaN in round 2.

Run as ``python -m tests.federated.faulty_client OUT_DIR [hydra overrides]`` (from the
repository root): the selected platforms go through the real simulation engine with
this ClientApp in place of ``clients.app``.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
from flwr.app import Array, Context, Message
from flwr.clientapp import ClientApp

from clients.app import evaluate as real_evaluate
from clients.app import train as real_train

FAULTY = "video"
faulty_app = ClientApp()


@faulty_app.train()
def train(msg: Message, context: Context) -> Message:
    """Train as usual, then corrupt the reply of the faulty platform."""
    reply = real_train(msg, context)
    if reply.content["info"]["platform"] == FAULTY:
        arrays = reply.content["arrays"]
        name = sorted(arrays.keys())[0]
        value = arrays[name].numpy()
        if int(msg.content["config"]["server-round"]) == 1:
            arrays[name] = Array(np.zeros((value.shape[0] + 1, value.shape[1]), dtype=value.dtype))
        else:
            value = value.copy()
            value[0, 0] = np.nan
            arrays[name] = Array(value)
    return reply


@faulty_app.evaluate()
def evaluate(msg: Message, context: Context) -> Message:
    """Evaluate as usual."""
    return real_evaluate(msg, context)


def main(argv: list[str]) -> None:
    """Compose ``conf/`` with the overrides and simulate with :data:`faulty_app`."""
    from hydra import compose, initialize_config_dir

    from fedrec.config import register_configs, validate
    from server.simulation import simulate

    root = Path(__file__).resolve().parents[2]
    register_configs()
    with initialize_config_dir(config_dir=str(root / "conf"), version_base="1.3"):
        cfg = compose("config", overrides=["command=simulate", *argv[1:]])
    validate(cfg)
    simulate(cfg, argv[0], client_app=faulty_app)


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
    main(sys.argv[1:])
