"""One platform's federated client, without Flower.

A :class:`PlatformClient` builds its platform's task once (data, frozen backbone,
lower-layer caches on disk under ``data.cache_dir``), then per round loads the global
adapter, trains locally with :func:`fedrec.train.fit` (or user-level DP-SGD) and hands
back its adapter; on evaluation it scores the global adapter on its own data. Its
platform-local parameters (item-ID embeddings in hybrid mode) never leave it: they are
saved on the client's disk after every round, tagged with the round, so a resumed run
picks up the state of the round it resumes from. Under DP its privacy ledger is the
node's, keyed by the platform's training data (:class:`fedrec.privacy.LedgerStore`), and
what its replies may carry is :mod:`fedrec.federated.replies`.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, cast

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf

from fedrec.federated import seq_client
from fedrec.federated.arrays import to_numpy, to_torch
from fedrec.federated.local_state import LocalStateStore
from fedrec.federated.replies import LocalReport, evaluation_metrics

if TYPE_CHECKING:
    from fedrec.privacy import NodeCaps, PrivacyLedger
    from fedrec.seqrec.task import SeqTask
    from fedrec.task import PlatformTask

log = logging.getLogger("fedrec.federated")


def round_seed(seed: int, server_round: int, platform_index: int) -> int:
    """Seed of a client's local training in a round (independent of resumes and scheduling)."""
    return int(np.random.SeedSequence([seed, server_round, platform_index]).generate_state(1)[0])


@dataclass
class TrainOutcome:
    """What a client's local round produced."""

    state: dict[str, np.ndarray]
    num_examples: int
    loss: float
    steps: int
    seconds: float
    metrics: dict[str, float] = field(default_factory=dict)
    refused: str | None = None
    ledger: dict | None = None


def client_config(
    cfg: DictConfig, platform: str, data_root: str | None = None, cache_dir: str | None = None
) -> DictConfig:
    """The run's config restricted to ``platform``, with the node's data root and cache dir.

    Raises
    ------
    ValueError
        If ``platform`` is not one of the run's platforms.
    """
    if platform not in cfg.platforms:
        raise ValueError(f"platform {platform!r} is not in this run's platforms {list(cfg.platforms)}")
    out = OmegaConf.create(OmegaConf.to_container(cfg, resolve=True))
    out.platforms = {platform: cfg.platforms[platform]}
    if data_root:
        out.data.root = data_root
    if cache_dir:
        out.data.cache_dir = cache_dir
    return out  # type: ignore[return-value]  # a DictConfig built from one


class PlatformParts:
    """What the clients of one platform share in a process: data, encoder, item side, head.

    The clients of a platform's user shards differ only in their users; the platform's
    data, the encoder, the tokenised catalogue with its frozen lower-layer states and
    the item index are built once here. The platform head (item-ID embeddings) is one
    module too: every client loads its own platform-local state into it before each
    use (:meth:`PlatformClient._load`), so it holds no client's state between calls.

    Parameters
    ----------
    cfg : DictConfig
        The config restricted to the platform (:func:`client_config`).
    platform : str
        The platform.
    """

    def __init__(self, cfg: DictConfig, platform: str) -> None:
        from fedrec.build import build_catalogue, build_encoder, build_head, build_inputs, load_datasets
        from fedrec.seqrec.build import build_platform, is_seqrec

        self.cfg, self.platform = cfg, platform
        self.data = load_datasets(cfg)[platform]
        self.encoder, tokenizer = build_encoder(cfg.model, cfg.seed)
        if cfg.federation.aggregation == "ffa":
            self.encoder.freeze_lora_a()
        self.inputs = build_inputs(cfg, self.data, tokenizer)
        self.head = build_head(cfg, self.data.num_items)
        self.catalogue = build_catalogue(cfg, self.data, self.inputs, self.encoder)
        #: the sequence model (``model.kind=seqrec``; one user shard per platform), else None
        self.seq = build_platform(cfg, self.data, self.encoder, self.catalogue) if is_seqrec(cfg) else None
        self.initial_local = (
            {} if self.head is None else {k: v.detach().clone() for k, v in self.head.state_dict().items()}
        )

    def task(self, shard: int = 0, shards: int = 1) -> PlatformTask:
        """The task of one user shard (the whole platform when ``shards == 1``), sharing these parts."""
        from fedrec.build import build_task
        from fedrec.data.shard import shard_users

        data = shard_users(self.data, shards, shard)
        return build_task(self.cfg, data, self.encoder, inputs=self.inputs, head=self.head, catalogue=self.catalogue)


class PlatformClient:
    """A federated client for one platform, or one user shard of it (reused every round).

    Parameters
    ----------
    cfg : DictConfig
        The run's resolved config (all platforms; this client uses its own).
    platform : str
        The platform this client serves.
    state_dir : path-like
        Folder for the platform-local state (this client's disk).
    data_root, cache_dir : str, optional
        Node-specific overrides of ``data.root`` / ``data.cache_dir``.
    threads : int, optional
        torch intra-op threads (default: ``train.threads``).
    shard : int, default 0
        The user shard it serves (``0 <= shard < federation.shards_per_platform``;
        :func:`fedrec.data.shard.shard_users`).
    parts : PlatformParts, optional
        The platform's shared parts, built by another client of the same platform and
        config in this process (default: built here).
    ledger_dir : path-like, optional
        The node's privacy ledger folder, shared by every run on this node
        (:class:`fedrec.privacy.LedgerStore`); default ``<state_dir>/privacy`` (a one-off
        client: the ledger lasts as long as that folder).
    caps : NodeCaps, optional
        The node's own privacy limits (from its node config; the run cannot change them).
        With caps the client trains only under DP and withholds its evaluation metrics.
    """

    def __init__(
        self,
        cfg: DictConfig,
        platform: str,
        state_dir: str | Path,
        data_root: str | None = None,
        cache_dir: str | None = None,
        threads: int | None = None,
        shard: int = 0,
        parts: PlatformParts | None = None,
        ledger_dir: str | Path | None = None,
        caps: NodeCaps | None = None,
    ) -> None:
        from fedrec.federated.shards import client_index, client_name, shards_per_platform
        from fedrec.federated.supported import check_supported

        check_supported(cfg)
        self.platform, self.shard = platform, shard
        shards = shards_per_platform(cfg)
        self.name = client_name(platform, shard, shards)
        self.platform_index = client_index(cfg, platform, shard)
        self.cfg = client_config(cfg, platform, data_root, cache_dir)
        self.cfg.train.progress = False
        torch.set_num_threads(int(threads or self.cfg.train.threads))
        start = time.perf_counter()
        self.parts = parts if parts is not None else PlatformParts(self.cfg, platform)
        self.encoder = self.parts.encoder
        self.seq = self.parts.seq
        self.task: PlatformTask | SeqTask = self.seq.task if self.seq is not None else self.parts.task(shard, shards)
        self.store = LocalStateStore(state_dir)
        self.report = LocalReport(state_dir)
        self.ledger_dir = Path(ledger_dir) if ledger_dir is not None else Path(state_dir) / "privacy"
        self.caps = caps
        self.initial_local = self.parts.initial_local
        self.build_seconds = time.perf_counter() - start
        log.info("client %s built in %.1fs (%d users)", self.name, self.build_seconds, self.task.data.num_users)

    @property
    def two_tower(self) -> PlatformTask:
        """The two-tower task (the client does not run the sequence model)."""
        assert self.seq is None
        return cast("PlatformTask", self.task)

    def _load(self, global_state: dict[str, np.ndarray], local_round: int) -> None:
        if self.seq is not None:
            seq_client.load(self, global_state, local_round)
            return
        self.encoder.load_adapter_state(to_torch(global_state))
        found = self.store.load(local_round)
        if found is not None:
            self.two_tower.load_local_state(found[1])
        else:
            self.two_tower.load_local_state(self.initial_local)

    def train(self, global_state: dict[str, np.ndarray], server_round: int) -> TrainOutcome:
        """Train locally for one round from the global adapter.

        Parameters
        ----------
        global_state : dict
            The global adapter (name to array).
        server_round : int
            The round (1-based); the local state of the latest round before it is loaded,
            and this round's local state is saved afterwards.

        Raises
        ------
        ValueError
            If the global adapter does not fit this client's encoder.
        """
        from fedrec.train import fit, fit_options

        if self.caps is not None and not self.cfg.privacy.enabled:
            reason = (
                f"node cap: this node trains only under differential privacy (its node config sets {self.caps}), "
                "but the run has privacy.enabled=false; the round was not trained"
            )
            log.warning("client %s refuses round %d: %s", self.name, server_round, reason)
            return TrainOutcome({}, 0, float("nan"), 0, 0.0, refused=reason)
        self._load(global_state, server_round - 1)
        if self.cfg.privacy.enabled:
            return self._train_private(server_round)
        if self.seq is not None:
            return seq_client.train(self, server_round, round_seed(self.cfg.seed, server_round, self.platform_index))
        fed = self.cfg.federation
        result = fit(
            [self.two_tower],
            epochs=fed.local_epochs,
            max_steps=fed.local_steps,
            **fit_options(self.cfg.train),
            seed=round_seed(self.cfg.seed, server_round, self.platform_index),
            progress=False,
        )
        self.store.save(server_round, self.two_tower.local_state())
        return TrainOutcome(
            state=to_numpy(self.encoder.adapter_state()),
            num_examples=int(result.num_examples.get(self.platform, 0)),
            loss=float(result.loss.get(self.platform, float("nan"))),
            steps=result.steps,
            seconds=result.seconds,
        )

    @property
    def private(self) -> bool:
        """Whether only DP outputs may leave this client: a DP run, or a node with caps (whatever the run says)."""
        return bool(self.cfg.privacy.enabled) or self.caps is not None

    @functools.cached_property
    def fingerprint(self) -> str:
        """The fingerprint of the training data this client's DP training reads (its ledger's key)."""
        from fedrec.privacy import training_fingerprint

        return training_fingerprint(self.task.data)

    @property
    def ledger_path(self) -> Path:
        """The ledger of this platform's training data in the node's ledger folder."""
        from fedrec.privacy import LedgerStore

        return LedgerStore(self.ledger_dir).ledger_path(self.platform, self.fingerprint)

    def open_ledger(self) -> PrivacyLedger:
        """The node's ledger of this platform's training data, with this run's budget and the node's caps.

        Raises
        ------
        fedrec.privacy.LedgerError
            If the node knows a ledger of this data that is gone or unreadable.
        """
        from fedrec.privacy import LedgerStore

        p = self.cfg.privacy
        budget = None if p.budget is None else float(p.budget)
        return LedgerStore(self.ledger_dir).open(
            self.platform, self.fingerprint, float(p.delta), str(p.accountant), budget, self.caps
        )

    def restore_ledger(self, state: dict | None) -> None:
        """Bring the ledger up to a copy kept elsewhere (Flower's ``Context.state``) when that copy is ahead.

        The node's folder is the source of truth; a copy of the same data's ledger that
        has charged more steps and extends the folder's history replaces it, so epsilon
        is never under-counted. A ledger the node cannot open is left to :meth:`train`
        to refuse.
        """
        from fedrec.privacy import LedgerError, LedgerStore

        if not state or not self.cfg.privacy.enabled or state.get("fingerprint") != self.fingerprint:
            return
        try:
            ledger = self.open_ledger()
        except LedgerError:
            return
        LedgerStore(self.ledger_dir).recover(ledger, state["history"], "run state (Context.state)")

    def _train_private(self, server_round: int) -> TrainOutcome:
        """One round of user-level DP-SGD, charged to the node's ledger of this data (refused over a limit).

        A round re-run after a crash (``federation.resume``) is charged again: its first
        run's adapter may have been sent, so nothing is ever taken off the ledger. A
        ledger the node knows of but cannot read refuses the round.
        """
        from fedrec.privacy import LedgerError, train_private_from_config

        try:
            ledger = self.open_ledger()
        except LedgerError as exc:
            log.error("client %s refuses round %d: %s", self.name, server_round, exc)
            return TrainOutcome({}, 0, float("nan"), 0, 0.0, refused=str(exc))
        seed = round_seed(self.cfg.seed, server_round, self.platform_index)
        if self.seq is not None:
            result = seq_client.train_private(self, ledger, server_round, seed)
        else:
            result = train_private_from_config(
                self.two_tower, self.cfg, ledger, federated=True, seed=seed, round_id=server_round
            )
        public = result.public_metrics()
        metrics = {k: float(v) for k, v in public.items() if isinstance(v, int | float) and k != "num-examples"}
        if result.refused:
            log.warning("client %s refuses round %d: %s", self.platform, server_round, result.refused)
            return TrainOutcome(
                {}, 0, float("nan"), 0, 0.0, metrics, refused=result.refused, ledger=ledger.state_dict()
            )
        if self.seq is not None:
            self.store.save(server_round, self.seq.local_state())
            state = self.seq.shared_state()
        else:
            self.store.save(server_round, self.two_tower.local_state())
            state = to_numpy(self.encoder.adapter_state())
        return TrainOutcome(
            state=state,
            num_examples=int(public["num-examples"]),
            loss=float(result.loss.get(self.platform, float("nan"))),
            steps=result.steps,
            seconds=result.seconds,
            metrics=metrics,
            ledger=ledger.state_dict(),
        )

    def evaluate(
        self, global_state: dict[str, np.ndarray], split: str, local_round: int, max_users: int = -1
    ) -> dict[str, float]:
        """Full-ranking metrics and loss of the global adapter on ``split``.

        Parameters
        ----------
        global_state : dict
            The adapter to score.
        split : {"valid", "test"}
            The split.
        local_round : int
            Use the platform-local state saved at the latest round ``<=`` this one.
        max_users : int, default -1
            Score a fixed random subset of this many users, the same every round
            (:func:`fedrec.evaluate.validation_users`; -1 = all).
        """
        from fedrec.evaluate import validation_users

        self._load(global_state, local_round)
        users = None
        if 0 < max_users < self.task.data.num_users:
            users = validation_users(self.task.data.num_users, max_users, int(self.cfg.seed))
        if self.seq is not None:
            return seq_client.evaluate(self, split, local_round, users)
        return self.task.evaluate(split, batch_size=self.cfg.train.eval_batch_size, users=users)

    def evaluation_reply(
        self,
        global_state: dict[str, np.ndarray],
        split: str,
        local_round: int,
        max_users: int = -1,
        setup_seconds: float = 0.0,
    ) -> dict[str, float | int]:
        """:meth:`evaluate`, recorded in the local report, as the metrics an evaluation reply may carry.

        In a DP run (or on a node with caps) the reply carries only ``withheld``: the
        metrics stay in :attr:`report` (:mod:`fedrec.federated.replies`).
        """
        started = time.perf_counter()
        m = self.evaluate(global_state, split, local_round, max_users)
        seconds = time.perf_counter() - started
        self.report.record(split, local_round, m)
        return evaluation_metrics(m, seconds, setup_seconds, self.private)


#: this process's built clients (least recently used first) and their platforms' shared parts
_CLIENTS: OrderedDict[str, PlatformClient] = OrderedDict()
_PARTS: OrderedDict[str, PlatformParts] = OrderedDict()
#: clients kept built when the config does not say (``federation.client_cache``)
DEFAULT_CLIENT_CACHE = 16


@functools.lru_cache(maxsize=4)
def run_config(cfg_yaml: str) -> DictConfig:
    """The run's config parsed from the YAML every message carries (parsed once per process; read-only)."""
    cfg = OmegaConf.create(cfg_yaml)
    assert isinstance(cfg, DictConfig)
    OmegaConf.set_readonly(cfg, True)
    return cfg


def _key(*parts: object) -> str:
    return hashlib.sha256(repr(parts).encode()).hexdigest()


def cached_client(
    cfg_yaml: str,
    platform: str,
    state_dir: str | Path,
    data_root: str | None = None,
    cache_dir: str | None = None,
    threads: int | None = None,
    shard: int = 0,
    ledger_dir: str | Path | None = None,
    caps: NodeCaps | None = None,
) -> PlatformClient:
    """A :class:`PlatformClient`, built on first use in this process and reused while it is cached.

    At most ``federation.client_cache`` clients stay built (least recently used evicted):
    a client holds nothing between calls that is not also on its disk (the platform-local
    state of every round, the privacy ledger), so an evicted client is rebuilt as it was,
    at the cost of its users' caches. The clients of one platform share its heavy parts
    (:class:`PlatformParts`), kept for the platforms of the latest run only. The cache
    keys cover the config text and every argument, so a new run builds new clients; the
    lower-layer caches on disk make that cheap.
    """
    key = _key(cfg_yaml, platform, shard, str(state_dir), data_root, cache_dir, threads, str(ledger_dir), caps)
    if key in _CLIENTS:
        _CLIENTS.move_to_end(key)
        return _CLIENTS[key]
    cfg = run_config(cfg_yaml)
    pkey = _key(cfg_yaml, platform, data_root, cache_dir)
    client = PlatformClient(
        cfg, platform, state_dir, data_root, cache_dir, threads, shard, _PARTS.get(pkey), ledger_dir, caps
    )
    _PARTS[pkey] = client.parts
    _PARTS.move_to_end(pkey)
    while len(_PARTS) > len(cfg.platforms):
        _PARTS.popitem(last=False)
    _CLIENTS[key] = client
    while len(_CLIENTS) > max(1, int(cfg.federation.get("client_cache", DEFAULT_CLIENT_CACHE))):
        _CLIENTS.popitem(last=False)
    return client
