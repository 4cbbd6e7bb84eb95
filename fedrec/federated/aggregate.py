"""Aggregation of LoRA adapter states, and validation of incoming updates.

An adapter state maps parameter names (as in
:meth:`fedrec.model.encoder.LoraEncoder.adapter_state`) to arrays. Every LoRA module
contributes a pair ``...lora_A.<adapter>.weight`` ``[r, in]`` and
``...lora_B.<adapter>.weight`` ``[out, r]``; the module's weight update is
``scaling * B @ A``.

Three modes, all weighted by the clients' training examples:

``fedavg``
    Average A and B separately (classic FedAvg). Inexact: the average of the
    products is not the product of the averages.
``ffa``
    FFA-LoRA: A is frozen at the shared seed on every client, only B is trained, sent
    and averaged. Exact (``mean(B_k) @ A == mean(B_k @ A)``) and half the bytes.
``svd``
    Average the products ``B_k @ A_k`` per module, then re-factorise the average to
    rank r by a truncated SVD, splitting ``sqrt(S)`` between B and A. Exact whenever the
    averaged product has rank <= r, otherwise its best rank-r approximation.

Nothing here knows about Flower.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np

AGGREGATIONS = ("fedavg", "ffa", "svd")
LORA_A, LORA_B = "lora_A", "lora_B"

State = Mapping[str, np.ndarray]


def state_nbytes(state: State) -> int:
    """Raw tensor bytes of a state (``sum(numel * itemsize)``)."""
    return int(sum(np.asarray(v).nbytes for v in state.values()))


def lora_pairs(names: Sequence[str] | set[str]) -> dict[str, tuple[str, str]]:
    """Map each LoRA module to its ``(A name, B name)``.

    Parameters
    ----------
    names : sequence of str
        Parameter names of an adapter state.

    Returns
    -------
    dict
        ``{module prefix: (A name, B name)}`` for every A with a matching B.

    Raises
    ------
    ValueError
        If an A has no B or a B no A.
    """
    names = set(names)
    pairs = {}
    for name in sorted(names):
        if f".{LORA_A}." in name:
            b = name.replace(f".{LORA_A}.", f".{LORA_B}.")
            if b not in names:
                raise ValueError(f"LoRA tensor {name} has no matching {LORA_B} tensor")
            pairs[name.split(f".{LORA_A}.")[0]] = (name, b)
    unmatched = [n for n in names if f".{LORA_B}." in n and n.replace(f".{LORA_B}.", f".{LORA_A}.") not in names]
    if unmatched:
        raise ValueError(f"LoRA tensor {sorted(unmatched)[0]} has no matching {LORA_A} tensor")
    return pairs


def check_update(update: Mapping[str, object], expected: Mapping[str, tuple[int, ...]]) -> str | None:
    """Why an incoming adapter update must be rejected, or None if it is acceptable.

    Parameters
    ----------
    update : mapping
        Parameter name to array, as received from a client.
    expected : mapping
        Parameter name to shape of the global adapter (the names a client must send).

    Returns
    -------
    str or None
        A human-readable reason (names the first offending tensor), or None.
    """
    missing = sorted(set(expected) - set(update))
    unexpected = sorted(set(update) - set(expected))
    if missing or unexpected:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing tensor(s), e.g. {missing[0]}")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected tensor(s), e.g. {unexpected[0]}")
        return "; ".join(parts)
    for name, shape in expected.items():
        arr = update[name]
        if not isinstance(arr, np.ndarray):
            return f"tensor {name} is a {type(arr).__name__}, not an array"
        if tuple(arr.shape) != tuple(shape):
            return f"tensor {name} has shape {tuple(arr.shape)}, expected {tuple(shape)}"
        if not np.issubdtype(arr.dtype, np.floating):
            return f"tensor {name} has dtype {arr.dtype}, expected a floating type"
        if not np.isfinite(arr).all():
            bad = int((~np.isfinite(arr)).sum())
            return f"tensor {name} holds {bad} non-finite value(s)"
    return None


def check_weight(num_examples: object) -> str | None:
    """Why a reported example count is unusable as an aggregation weight, or None."""
    if isinstance(num_examples, bool) or not isinstance(num_examples, int | float):
        return f"num-examples is {num_examples!r}, not a number"
    if not math.isfinite(num_examples) or num_examples <= 0:
        return f"num-examples is {num_examples}, must be a finite number > 0"
    return None


def _normalised(weights: Sequence[float]) -> np.ndarray:
    w = np.asarray(weights, dtype=np.float64)
    if len(w) == 0 or not np.all(np.isfinite(w)) or np.any(w <= 0):
        raise ValueError(f"aggregation weights must be finite and > 0, got {list(weights)}")
    return w / w.sum()


def fedavg(states: Sequence[State], weights: Sequence[float]) -> dict[str, np.ndarray]:
    """Weighted average of every tensor separately (A and B alike).

    Parameters
    ----------
    states : sequence of mapping
        Client adapter states with identical names and shapes.
    weights : sequence of float
        One positive weight per state (training examples).

    Returns
    -------
    dict
        The averaged state, in the dtype of the first state.
    """
    w = _normalised(weights)
    out = {}
    for name, ref in states[0].items():
        acc = np.zeros(ref.shape, dtype=np.float64)
        for wk, s in zip(w, states, strict=True):
            acc += wk * np.asarray(s[name], dtype=np.float64)
        out[name] = acc.astype(ref.dtype)
    return out


def ffa(states: Sequence[State], weights: Sequence[float]) -> dict[str, np.ndarray]:
    """FFA-LoRA aggregation: weighted average of the B matrices (A is frozen and not sent).

    Raises
    ------
    ValueError
        If a state carries an A matrix (the client did not freeze A).
    """
    for s in states:
        a = [n for n in s if f".{LORA_A}." in n]
        if a:
            raise ValueError(f"ffa expects B matrices only, got {a[0]}")
    return fedavg(states, weights)


def svd_merge(states: Sequence[State], weights: Sequence[float], rel_tol: float = 1e-6) -> dict[str, np.ndarray]:
    """Average the products ``B_k @ A_k`` per module and re-factorise to rank r.

    With ``P = sum_k w_k B_k A_k = U S V^T``, the merged pair is ``B = U_r sqrt(S_r)``,
    ``A = sqrt(S_r) V_r^T`` (r = the adapters' rank), so ``B @ A`` is the best rank-r
    approximation of ``P`` and equals ``P`` when ``rank(P) <= r``.

    A component whose singular value is (numerically) zero would leave both its A row
    and its B column at zero, where LoRA gets no gradient. Such components keep
    ``B = 0`` (the product is unchanged) and get ``A = c * V^T`` row, with ``c`` the RMS
    row norm of the clients' averaged A, so training can move them again.

    Parameters
    ----------
    states : sequence of mapping
        Client adapter states (A and B of every module).
    weights : sequence of float
        One positive weight per state.
    rel_tol : float, default 1e-6
        Singular values below ``rel_tol * max(S)`` count as zero.

    Returns
    -------
    dict
        The merged state (same names, shapes and dtype).
    """
    w = _normalised(weights)
    pairs = lora_pairs(list(states[0]))
    out: dict[str, np.ndarray] = {}
    for a_name, b_name in pairs.values():
        a_ref, b_ref = states[0][a_name], states[0][b_name]
        r = a_ref.shape[0]
        if r > min(b_ref.shape[0], a_ref.shape[1]):
            raise ValueError(f"rank {r} exceeds the dimensions of {a_name}")
        prod = np.zeros((b_ref.shape[0], a_ref.shape[1]), dtype=np.float64)
        mean_a = np.zeros(a_ref.shape, dtype=np.float64)
        for wk, s in zip(w, states, strict=True):
            a64 = np.asarray(s[a_name], dtype=np.float64)
            prod += wk * (np.asarray(s[b_name], dtype=np.float64) @ a64)
            mean_a += wk * a64
        u, sv, vt = np.linalg.svd(prod, full_matrices=False)
        u, sv, vt = u[:, :r], sv[:r], vt[:r]
        root = np.sqrt(sv)
        b_new = u * root[None, :]
        a_new = root[:, None] * vt
        smax = float(sv.max()) if sv.size else 0.0
        dead = sv <= rel_tol * smax if smax > 0 else np.ones(r, dtype=bool)
        if dead.any():
            c = float(np.sqrt((mean_a**2).sum(1).mean()))
            b_new[:, dead] = 0.0
            a_new[dead] = c * vt[dead]
        out[a_name] = a_new.astype(a_ref.dtype)
        out[b_name] = b_new.astype(b_ref.dtype)
    others = set(states[0]) - set(out)
    if others:
        out.update(fedavg([{k: s[k] for k in others} for s in states], weights))
    return out


def aggregate(mode: str, states: Sequence[State], weights: Sequence[float]) -> dict[str, np.ndarray]:
    """Aggregate client adapter states with ``mode`` (one of :data:`AGGREGATIONS`).

    Raises
    ------
    ValueError
        On an unknown mode, no states, or bad weights.
    """
    if not states:
        raise ValueError("nothing to aggregate: no accepted update")
    if mode == "fedavg":
        return fedavg(states, weights)
    if mode == "ffa":
        return ffa(states, weights)
    if mode == "svd":
        return svd_merge(states, weights)
    raise ValueError(f"aggregation must be one of {list(AGGREGATIONS)}, got {mode!r}")


def product(state: State, module: str) -> np.ndarray:
    """``B @ A`` of one module of a state (float64), for tests and diagnostics."""
    a, b = lora_pairs(list(state))[module]
    return np.asarray(state[b], dtype=np.float64) @ np.asarray(state[a], dtype=np.float64)
