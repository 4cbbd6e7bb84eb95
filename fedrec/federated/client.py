"""One platform's federated client, without Flower.

A :class:`PlatformClient` builds its platform's task once (data, frozen backbone,
lower-layer caches on disk under ``data.cache_dir``), then per round loads the global
adapter, trains locally with :func:`fedrec.train.fit` and hands back its adapter; on
evaluation it scores the global adapter on its own data. Its platform-local
parameters (item-ID embeddings in hybrid mode) never leave it: they are saved on the
client's disk after every round, tagged with the round, so a resumed run picks up the
state of the round it resumes from.
"""

from __future__ import annotations

import hashlib
import logging
import re
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf

from fedrec.io import save_torch

log = logging.getLogger("fedrec.federated")


def round_seed(seed: int, server_round: int, platform_index: int) -> int:
    """Seed of a client's local training in a round (independent of resumes and scheduling)."""
    return int(np.random.SeedSequence([seed, server_round, platform_index]).generate_state(1)[0])


def to_numpy(state: dict[str, torch.Tensor]) -> dict[str, np.ndarray]:
    """Torch tensors to contiguous NumPy arrays (same names)."""
    return {k: v.detach().cpu().contiguous().numpy() for k, v in state.items()}


def to_torch(state: dict[str, np.ndarray]) -> dict[str, torch.Tensor]:
    """NumPy arrays to torch tensors (copies; same names)."""
    return {k: torch.from_numpy(np.array(v, copy=True)) for k, v in state.items()}


class LocalStateStore:
    """Round-tagged platform-local state of one client in a folder.

    Parameters
    ----------
    folder : path-like
        Where ``local-r<round>.pt`` files go (created on first save).
    """

    PATTERN = re.compile(r"local-r(\d+)\.pt$")

    def __init__(self, folder: str | Path) -> None:
        self.folder = Path(folder)

    def rounds(self) -> list[int]:
        """Rounds with a saved state, ascending."""
        if not self.folder.is_dir():
            return []
        found = (self.PATTERN.search(p.name) for p in self.folder.iterdir())
        return sorted(int(m.group(1)) for m in found if m)

    def save(self, server_round: int, state: dict[str, torch.Tensor]) -> Path | None:
        """Atomically save the state after ``server_round`` (nothing to save: no file)."""
        if not state:
            return None
        return save_torch(self.folder / f"local-r{server_round:05d}.pt", state)

    def load(self, at_most: int) -> tuple[int, dict[str, torch.Tensor]] | None:
        """The state of the latest round ``<= at_most``, or None."""
        rounds = [r for r in self.rounds() if r <= at_most]
        if not rounds:
            return None
        r = rounds[-1]
        return r, torch.load(self.folder / f"local-r{r:05d}.pt", weights_only=True)


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


class PlatformClient:
    """A federated client for one platform (built once per process, reused every round).

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
    """

    def __init__(
        self,
        cfg: DictConfig,
        platform: str,
        state_dir: str | Path,
        data_root: str | None = None,
        cache_dir: str | None = None,
        threads: int | None = None,
    ) -> None:
        from fedrec.build import build_encoder, build_task, load_datasets
        from fedrec.federated.server import check_supported

        check_supported(cfg)
        self.platform = platform
        self.platform_index = list(cfg.platforms).index(platform) if platform in cfg.platforms else -1
        self.cfg = client_config(cfg, platform, data_root, cache_dir)
        self.cfg.train.progress = False
        torch.set_num_threads(int(threads or self.cfg.train.threads))
        start = time.perf_counter()
        data = load_datasets(self.cfg)[platform]
        self.encoder, tokenizer = build_encoder(self.cfg.model, self.cfg.seed)
        if self.cfg.federation.aggregation == "ffa":
            self.encoder.freeze_lora_a()
        self.task = build_task(self.cfg, data, self.encoder, tokenizer)
        self.store = LocalStateStore(state_dir)
        self.initial_local = self.task.local_state()
        self.build_seconds = time.perf_counter() - start
        log.info("client %s built in %.1fs (%d users)", platform, self.build_seconds, data.num_users)

    def _load(self, global_state: dict[str, np.ndarray], local_round: int) -> None:
        self.encoder.load_adapter_state(to_torch(global_state))
        found = self.store.load(local_round)
        if found is not None:
            self.task.load_local_state(found[1])
        else:
            self.task.load_local_state(self.initial_local)

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

        self._load(global_state, server_round - 1)
        if self.cfg.privacy.enabled:
            return self._train_private(server_round)
        fed = self.cfg.federation
        result = fit(
            [self.task],
            epochs=fed.local_epochs,
            max_steps=fed.local_steps,
            **fit_options(self.cfg.train),
            seed=round_seed(self.cfg.seed, server_round, self.platform_index),
            progress=False,
        )
        self.store.save(server_round, self.task.local_state())
        return TrainOutcome(
            state=to_numpy(self.encoder.adapter_state()),
            num_examples=int(result.num_examples.get(self.platform, 0)),
            loss=float(result.loss.get(self.platform, float("nan"))),
            steps=result.steps,
            seconds=result.seconds,
        )

    @property
    def ledger_path(self) -> Path:
        """The platform's privacy ledger on this client's disk (one per run)."""
        return self.store.folder / "privacy_ledger.json"

    def restore_ledger(self, state: dict | None) -> None:
        """Restore the privacy ledger from a copy kept elsewhere (Flower's ``Context.state``).

        The copy on disk is the source of truth; a copy that has charged more steps than
        the disk's (e.g. a wiped state folder) replaces it, so epsilon is never under-counted.
        """
        from fedrec.privacy import ledger_from_config

        if not state or not self.cfg.privacy.enabled:
            return
        disk = ledger_from_config(self.cfg, self.ledger_path)
        other = ledger_from_config(self.cfg)
        other.load_state_dict(state)
        if other.steps > disk.steps:
            other.save(self.ledger_path)
            log.warning("client %s: privacy ledger restored from the run state (%d steps)", self.platform, other.steps)

    def _train_private(self, server_round: int) -> TrainOutcome:
        """One round of user-level DP-SGD, charged to the platform's ledger (refused over budget).

        A round re-run after a crash (``federation.resume``) is charged again: its first
        run's adapter may have been sent, so nothing is ever taken off the ledger.
        """
        from fedrec.privacy import ledger_from_config, train_private_from_config

        ledger = ledger_from_config(self.cfg, self.ledger_path)
        result = train_private_from_config(
            self.task,
            self.cfg,
            ledger,
            federated=True,
            seed=round_seed(self.cfg.seed, server_round, self.platform_index),
            round_id=server_round,
        )
        public = result.public_metrics()
        metrics = {k: float(v) for k, v in public.items() if isinstance(v, int | float) and k != "num-examples"}
        if result.refused:
            log.warning("client %s refuses round %d: %s", self.platform, server_round, result.refused)
            return TrainOutcome(
                {}, 0, float("nan"), 0, 0.0, metrics, refused=result.refused, ledger=ledger.state_dict()
            )
        self.store.save(server_round, self.task.local_state())
        return TrainOutcome(
            state=to_numpy(self.encoder.adapter_state()),
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
            Score only the first N users (-1 = all).
        """
        self._load(global_state, local_round)
        users = None
        if max_users > 0:
            users = range(min(max_users, self.task.data.num_users))
        return self.task.evaluate(split, batch_size=self.cfg.train.eval_batch_size, users=users)


_CLIENTS: dict[str, PlatformClient] = {}


def cached_client(
    cfg_yaml: str,
    platform: str,
    state_dir: str | Path,
    data_root: str | None = None,
    cache_dir: str | None = None,
    threads: int | None = None,
) -> PlatformClient:
    """A :class:`PlatformClient`, built on first use in this process and reused after.

    The cache key covers the config text and every argument, so a new run (or a changed
    config) builds a new client; the lower-layer caches on disk make that rebuild cheap.
    """
    key = hashlib.sha256(repr((cfg_yaml, platform, str(state_dir), data_root, cache_dir, threads)).encode()).hexdigest()
    if key not in _CLIENTS:
        cfg = OmegaConf.create(cfg_yaml)
        assert isinstance(cfg, DictConfig)
        _CLIENTS[key] = PlatformClient(cfg, platform, state_dir, data_root, cache_dir, threads)
    return _CLIENTS[key]
