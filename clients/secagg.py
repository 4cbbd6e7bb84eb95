"""SecAgg+ on the client: Flower's ``secaggplus_mod`` for the training messages that use it.

:func:`secagg_mod` wraps the ClientApp. A TRAIN message carrying a ``secaggplus``
ConfigRecord goes through Flower's mod (its four stages: keys, key shares, the masked
vector, the unmasking shares); any other message goes straight to the app, unless the
node's config says ``secure-aggregation='secaggplus'``: such a node refuses to train for a
server that does not use the protocol. At the masked-vector stage the mod calls the app
with the legacy FitIns the server's workflow sends; :func:`_as_fit` hands the app the
message it always gets (``arrays`` by name, ``config``) and turns its reply into the
FitRes the mod masks. What the server still receives in the clear: the example count and
the reply's metrics (train loss and timings, or under DP the epsilon), and the platform.
"""

from __future__ import annotations

import json
from typing import Any

import flwr.compat.common.recorddict_compat as compat
import numpy as np
from flwr.app import Array, ArrayRecord, ConfigRecord, Context, Message, MessageType
from flwr.client.mod import secaggplus_mod
from flwr.clientapp.typing import ClientAppCallable
from flwr.common import Code, FitRes, Status, ndarrays_to_parameters, parameters_to_ndarrays
from flwr.common.secure_aggregation.secaggplus_constants import RECORD_KEY_CONFIGS, RECORD_KEY_STATE

NAMES = "fedrec-names"  # the FitIns config's JSON list of the adapter's tensor names, in the parameters' order
REQUIRED = "secure-aggregation"  # node config: 'secaggplus' = train only under the protocol


def secagg_mod(msg: Message, context: Context, call_next: ClientAppCallable) -> Message:
    """Run SecAgg+ for the TRAIN messages that carry its record; pass every other message through."""
    if msg.metadata.message_type != MessageType.TRAIN:
        return call_next(msg, context)
    if RECORD_KEY_CONFIGS in msg.content.config_records:
        return secaggplus_mod(msg, context, lambda m, c: _as_fit(m, c, call_next))
    if str(context.node_config.get(REQUIRED, "")) == "secaggplus":
        raise RuntimeError(
            "this node trains only under SecAgg+ (its node config has secure-aggregation='secaggplus'); the "
            "server sent a plain training message"
        )
    return call_next(msg, context)


def _as_fit(msg: Message, context: Context, call_next: ClientAppCallable) -> Message:
    """Call the app on the legacy FitIns of the masked-vector stage; its reply as the FitRes the mod masks.

    Raises
    ------
    RuntimeError
        If the client declined to train (its privacy budget), or its weighted values would
        be clipped (``federation.secagg_clipping_range``) or its weight exceeds
        ``federation.secagg_max_weight``: the node then drops out of the round instead of
        corrupting the sum.
    """
    fitins = compat.recorddict_to_fitins(msg.content, keep_input=True)
    config: dict[str, Any] = dict(fitins.config)
    names = json.loads(str(config.pop(NAMES)))
    arrays = parameters_to_ndarrays(fitins.parameters)
    msg.content["arrays"] = ArrayRecord({n: Array(a) for n, a in zip(names, arrays, strict=True)})
    msg.content["config"] = ConfigRecord(config)
    reply = call_next(msg, context)
    if reply.has_error():
        raise RuntimeError(f"training failed: {reply.error.reason}")
    info, metrics = dict(reply.content["info"]), dict(reply.content["metrics"])
    if "refused" in info:
        raise RuntimeError(f"{info['platform']} did not train: {info['refused']}")
    state = {k: v.numpy() for k, v in reply.content["arrays"].items()}
    num_examples = int(metrics.pop("num-examples"))  # type: ignore[call-overload]
    _check_range(state, num_examples, context)
    fitres = FitRes(
        status=Status(Code.OK, ""),
        parameters=ndarrays_to_parameters([state[n] for n in names]),
        num_examples=num_examples,
        metrics={**metrics, **info},  # in the clear, as Flower's protocol sends them
    )
    return Message(compat.fitres_to_recorddict(fitres, keep_input=True), reply_to=msg)


def _check_range(state: dict[str, np.ndarray], num_examples: int, context: Context) -> None:
    """Refuse a weight over ``max_weight`` or weighted values the quantization would clip."""
    sa = context.state.config_records[RECORD_KEY_STATE]  # the mod's state: what its setup stage received
    max_weight, clip = float(sa["max_weight"]), float(sa["clipping_range"])  # type: ignore[arg-type]
    if num_examples > max_weight:
        raise RuntimeError(
            f"{num_examples} training examples exceed federation.secagg_max_weight={max_weight} (the sum would "
            "overflow): raise it"
        )
    largest = max(float(np.abs(v).max()) for v in state.values()) * num_examples / max_weight
    if largest > clip:
        raise RuntimeError(
            f"a weighted adapter value ({largest:.4g}) is outside federation.secagg_clipping_range={clip} and would "
            "be clipped: raise it"
        )
