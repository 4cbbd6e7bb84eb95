"""SecAgg+'s round overhead in a real deployment on 127.0.0.1 (TLS + SuperNode authentication).

Runs the same two-platform federation twice through real ``flower-superlink`` /
``flower-supernode`` / ``flwr run`` processes (the helpers of tests/federated/deployment.py),
once plain and once with ``federation.secure_aggregation=secaggplus``, and prints each
round's time (results.json ``federation.history[*].seconds``), the whole ``flwr run`` wall
time and the two runs' final adapters' largest difference.

    FEDREC_DATA=../shared/datasets python simulations/secagg_overhead.py
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # the tests' deployment helpers (a script run from a source checkout)

from tests.federated.deployment import Deployment, Stream, free_ports  # noqa: E402

PLATFORMS = ("video", "ecommerce")
OVERRIDES = (
    "model=tiny train=smoke platform=[video,ecommerce] platforms.ecommerce.user_fraction=0.2 federation.rounds=2 "
    "federation.local_steps=2 federation.eval_max_users=100 train.num_negatives=32 federation.compare_local=false "
    "federation.compare_baselines=[] federation.export_joint_model=false federation.secagg_max_weight=1000"
)


def run(secagg: bool, data_root: Path, tmp: Path) -> dict[str, Any]:
    """One deployment; returns its round times, wall time, results and run directory."""
    tmp.mkdir(parents=True)
    dep = Deployment(tmp)
    link_port, *ports = free_ports(1 + len(PLATFORMS))
    try:
        dep.start_superlink(link_port)
        ids = dep.register(PLATFORMS)
        for p, port in zip(PLATFORMS, ports, strict=True):
            dep.start_supernode(p, port, dep.creds / f"node-{p}.key", data_root)
        nodes = ",".join(f"{ids[p]}:{p}" for p in PLATFORMS)
        over = f"{OVERRIDES} ++federation.nodes={{{nodes}}}"
        if secagg:
            over += " federation.secure_aggregation=secaggplus"
        out = tmp / "out"
        start = time.monotonic()
        run_config = f'overrides="{over}" out-dir="{out}"'
        proc = dep.flwr("run", str(ROOT), "fedrec-test", "--stream", "--run-config", run_config)
        stream = Stream(proc)
        proc.wait(timeout=1200)
        stream.thread.join(timeout=10)
        wall = time.monotonic() - start
        if not (out / "results.json").is_file():
            raise SystemExit(f"the {'secaggplus' if secagg else 'plain'} run failed:\n{stream.text[-3000:]}")
        doc = json.loads((out / "results.json").read_text())
        hist = doc["federation"]["history"]
        return {"rounds": [h["seconds"] for h in hist], "wall": wall, "out": out, "history": hist}
    finally:
        dep.stop()


def main() -> None:
    data_root = Path(os.environ.get("FEDREC_DATA", ROOT / ".." / "shared" / "datasets")).resolve()
    os.environ["NO_PROXY"] = os.environ["no_proxy"] = "127.0.0.1,localhost"
    with tempfile.TemporaryDirectory() as tmp:
        res = {name: run(name == "secaggplus", data_root, Path(tmp) / name) for name in ("plain", "secaggplus")}
        a = torch.load(res["plain"]["out"] / "global_adapter.pt", weights_only=True)
        b = torch.load(res["secaggplus"]["out"] / "global_adapter.pt", weights_only=True)
        diff = max(float((a[k] - b[k]).abs().max()) for k in a)
        for name, r in res.items():
            rounds = ", ".join(f"{s:.1f}" for s in r["rounds"])
            print(f"{name:>10}: rounds [{rounds}] s, flwr run {r['wall']:.1f} s")
        secure = [h.get("secure_aggregation", {}) for h in res["secaggplus"]["history"]]
        print(f"secaggplus rounds' clients: {[s.get('clients') for s in secure]}")
        print(f"largest |plain - secaggplus| in the final adapter: {diff:.3g}")


if __name__ == "__main__":
    main()
