"""The schema behind every file in ``conf/``: one dataclass per config group.

Each dataclass field carries its help text in ``metadata["help"]``; Hydra validates
``conf/`` and every command-line override against these classes, so a key that does
not exist or a value of the wrong type is an error naming the key. ``CHOICES`` lists
the allowed values of the enumerated keys (checked by :func:`fedrec.config.checks.validate`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from omegaconf import MISSING

from fedrec.config.federation import FederationConfig
from fedrec.config.fields import help_field as _f


@dataclass
class PlatformConfig:
    """One platform's data source."""

    loader: str = _f(MISSING, "Data loader: amazon_office, movielens_100k, lastfm_hetrec or custom.")
    dir: str = _f(MISSING, "Folder of the platform's files: relative to data.root, or absolute.")
    friend_signal: bool = _f(
        False,
        "Append friends' most played train items to the user text (social graph). Uses other users' "
        "data, so it is refused when differential privacy is on.",
    )
    user_fraction: float = _f(
        1.0,
        "Keep a seeded random share of the platform's users (all of their data; the others' none): the "
        "data-poor platform of `fedrec experiments` (docs/RESULTS.md).",
    )
    prior: str = _f(
        "none",
        "model.kind=seqrec: a prior fit on the platform's training data and blended into its served score, the "
        "weight chosen on its valid split from model.seq.prior_weights: 'none' or 'ease' (λ chosen on valid from "
        "baseline.ease's grid). Stays on the platform.",
    )


@dataclass
class DataConfig:
    """Where the data and the derived caches live."""

    root: str = _f("${oc.env:FEDREC_DATA,./data}", "Folder holding one sub-folder per platform.")
    cache_dir: str = _f(
        "${oc.env:FEDREC_CACHE,.fedrec_cache}",
        "Folder for derived caches (tokenised catalogue, frozen lower-layer outputs, baseline vectors).",
    )
    download: bool = _f(True, "Fetch a benchmark platform's files (checksummed) when they are missing; needs internet.")


@dataclass
class SeqConfig:
    """The sequence model (``model.kind=seqrec``): the shared text part and the personal model."""

    dim: int = _f(64, "Width of the sequence model (the text adaptor maps text vectors to it).")
    layers: int = _f(2, "Transformer blocks of the sequence encoder.")
    heads: int = _f(2, "Attention heads.")
    dropout: float = _f(0.3, "Dropout of the sequence encoder.")
    max_history: int = _f(50, "Most recent history items a user is read by (the user is the whole history up to it).")
    holdout: float = _f(0.2, "Order-free platforms: share of a user's history held out as a training row's targets.")
    train_adapter: bool = _f(
        False,
        "Also train the LoRA adapter of the text encoder (straight-through against a refreshed item index); "
        "false = frozen text vectors (measured: the adapter did not pay for its ~4x compute; docs/RESULTS.md).",
    )
    fresh_items: int = _f(256, "With train_adapter: items per step whose text vectors carry the adapter's gradient.")
    refresh_steps: int = _f(20, "With train_adapter: rebuild the item index every N steps.")
    batch_size: int = _f(128, "Users (training rows) per step.")
    length_groups: int = _f(
        4,
        "Training losses computed in this many groups of rows of similar history length, each without the "
        "padding of longer ones: the same losses; non-DP 1.74x faster on ecommerce, 1.46x on video, 8% slower "
        "on social (fedrec bench seqtrain with and without; docs/EXPERIMENTS.md).",
    )
    lr: float = _f(1e-3, "Adam learning rate of the shared part.")
    adapter_lr: float = _f(1e-4, "Adam learning rate of the LoRA adapter (train_adapter only).")
    local_parts: list[str] = _f(
        [], "Shared-model parts each platform keeps its own copy of (e.g. [adaptor]); still sent, never loaded."
    )
    personal_epochs: int = _f(
        20, "After the last round: epochs of the personal model (shared part + item-ID embeddings, never sent)."
    )
    personal_lr: float = _f(1e-3, "Adam learning rate of the personal model.")
    prior_weights: list[float] = _f(
        [0.0, 0.25, 0.5, 0.75], "Blend weights of a platform's prior (platforms.<name>.prior) tried on valid."
    )
    personal_eval_every: int = _f(
        5, "Personal model: validate every N epochs and keep the best (0 = no personal model)."
    )
    personal_patience: int = _f(
        1,
        "Personal model: stop after this many validations in a row without a better NDCG@10 (0 = run every "
        "epoch); the best validated epoch is kept either way.",
    )


@dataclass
class ModelConfig:
    """Backbone, LoRA placement and the recommender on top (sequence model or two-tower)."""

    kind: str = _f(
        "two_tower",
        "'seqrec': the user is the whole history, read by a sequence model on the text vectors (model.seq); "
        "'two_tower': the user text of the most recent items through the LoRA encoder (the first model).",
    )
    seq: SeqConfig = field(default_factory=SeqConfig)

    backbone: str = _f(
        "minilm", "'minilm' (installed all-MiniLM-L6-v2), 'tiny' (random, tests) or a local HF BERT folder."
    )
    tiny_layers: int = _f(2, "Layers of the random 'tiny' backbone.")
    tiny_hidden: int = _f(32, "Hidden size of the random 'tiny' backbone.")
    lora_r: int = _f(8, "LoRA rank.")
    lora_alpha: float = _f(16.0, "LoRA alpha (scaling = alpha / r).")
    lora_dropout: float = _f(0.0, "Dropout on the LoRA input.")
    lora_targets: list[str] = _f(["query", "value"], "Backbone linear modules that get LoRA adapters.")
    lora_layers: int = _f(2, "LoRA on the top N encoder layers (0 = all layers).")
    cache_lower_layers: bool = _f(
        True,
        "Keep the frozen lower layers' outputs on disk under data.cache_dir (they are always computed once per "
        "text and held in memory; exact).",
    )
    bf16: Any = _f(
        "auto",
        "bf16 autocast for the backbone's matmuls: auto (on where the CPU has AVX512-BF16 or AMX; off elsewhere, "
        "where emulated bf16 is about 6x slower than fp32), true or false.",
    )
    item_max_tokens: int = _f(32, "Item text truncation, special tokens included.")
    user_max_tokens: int = _f(32, "User text (recent history, most recent first) truncation.")
    user_item_tokens: int = _f(16, "Tokens each history item may take in the user text.")
    friend_tokens: int = _f(16, "Token budget of the friend segment when friend_signal is on.")
    item_tower: str = _f(
        "frozen",
        "'frozen': items encoded by the backbone without adapters (exact static index; adapters serve the user "
        "tower). 'shared': items use the adapters too, trained through the positive only.",
    )
    score: str = _f("cosine", "'cosine' (scaled cosine of the text vectors) or 'dot'.")
    scale: float = _f(8.0, "Scale (inverse temperature) of the text cosine score.")
    hybrid: bool = _f(
        True, "Add per-platform item-ID embeddings (never federated) to the text vectors: content + collaborative."
    )
    id_dim: int = _f(64, "Dimension of the item-ID embeddings (hybrid only).")
    id_init_std: float = _f(0.01, "Init std of the item-ID embeddings.")
    history_ids: int = _f(50, "Most recent history items pooled into the user's ID vector (hybrid only).")


@dataclass
class TrainConfig:
    """Local training (the unit a federated client runs)."""

    epochs: float = _f(1.0, "Passes over the training examples (fractions allowed).")
    batch_size: int = _f(64, "Examples per step.")
    lr: float = _f(1e-3, "AdamW learning rate of the LoRA adapters.")
    head_lr: float = _f(1e-2, "AdamW learning rate of the platform-local parameters (item-ID embeddings).")
    weight_decay: float = _f(0.0, "AdamW weight decay.")
    num_negatives: int = _f(
        1024, "Negatives per step, drawn uniformly from the public catalogue (-1 = the whole catalogue)."
    )
    examples_per_user: int = _f(4, "Training examples per user: the last N positions of the train history.")
    index_refresh_steps: int = _f(50, "Re-encode the item index (the negatives' vectors) every N steps.")
    max_steps: int = _f(-1, "Stop after this many steps (-1 = no cap).")
    threads: int = _f(2, "torch intra-op threads.")
    eval_batch_size: int = _f(256, "Users per evaluation batch.")
    progress: bool = _f(True, "Show progress bars.")


@dataclass
class EvalConfig:
    """Evaluation settings."""

    splits: list[str] = _f(["valid", "test"], "Splits to score at the end of a run.")
    loss_weights: str = _f("uniform", "Cross-platform loss weights: 'uniform' or 'users'.")


@dataclass
class PrivacyConfig:
    """User-level differential privacy of local training (``fedrec.privacy``: DP-SGD with Opacus)."""

    enabled: bool = _f(
        False,
        "Train with user-level DP-SGD: each step Poisson-samples users, takes one row per sampled user (the "
        "sequence model: all of its targets, privacy.rows; the two-tower model: one example), clips each row's "
        "gradient and adds Gaussian noise.",
    )
    noise_multiplier: float = _f(1.0, "Noise std as a multiple of max_grad_norm (used when target_epsilon is null).")
    max_grad_norm: float = _f(1.0, "Clip norm of each user's (example's) gradient over all trainable parameters.")
    target_epsilon: float | None = _f(
        None,
        "Epsilon for the whole run (every round): the noise multiplier is calibrated to it before training from "
        "rounds x local steps (null = use noise_multiplier; inf = clipping only, no noise, no guarantee).",
    )
    delta: float = _f(1e-5, "Delta of the (epsilon, delta) guarantee, per platform (PROTOCOL.md).")
    accountant: str = _f(
        "rdp",
        "Privacy accountant: 'rdp' (Renyi DP) or 'prv' (privacy random variables: as tight as a PLD, 11-36% "
        "smaller epsilon at fedrec's settings; both checked against Google's dp-accounting in the tests).",
    )
    budget: float | None = _f(
        None,
        "Refuse to train a round that would take a platform's cumulative epsilon above this (null = no limit). "
        "Cumulative over every run on the same data that used the same ledger folder; a deployed node's own "
        "cap (node config max-epsilon) applies whatever this says.",
    )
    batch_size: int = _f(
        0, "Expected users per DP step; the sampling rate is batch_size / users (0 = train.batch_size)."
    )
    rows: str = _f(
        "whole",
        "Sequence model: what a sampled user contributes to a DP step: 'whole' (one row with all of its "
        "training targets) or 'one' (one row with one of them, drawn at random; for comparison).",
    )
    lr: float = _f(
        0.0,
        "Sequence model: Adam learning rate of the shared part when it trains under DP (0 = model.seq.lr); "
        "few, large DP steps want a larger one.",
    )
    sample_rate: float = _f(
        0.0,
        "Share q of a platform's users sampled per DP step, in (0, 1]; overrides batch_size (0 = batch_size / "
        "users). Large q (1/4 to 1/2: few, large steps) is the recipe for small populations (docs/PRIVACY.md).",
    )
    secure_mode: bool = _f(
        False,
        "Final runs: user sampling from the OS CSPRNG, noise from a generator re-seeded from it each step and "
        "Opacus's floating-point-attack-resistant Gaussian sampling (not reproducible).",
    )


@dataclass
class AuditConfig:
    """Empirical privacy audit (``fedrec audit``): canary users and a membership-inference test."""

    platform: str = _f("video", "Platform whose local training is audited (must be among the selected platforms).")
    canaries: int = _f(
        250,
        "Canary users per side: this many members (trained on) and as many non-members (never trained on). "
        "More canaries tighten the bound: the largest provable epsilon grows roughly like log(canaries).",
    )
    history_len: int = _f(
        3,
        "Items in each canary's random history (distinct catalogue items). Short histories make outlier users whose "
        "history ID vector is specific to them: the worst case the guarantee must cover, and the strongest signal.",
    )
    examples_per_canary: int = _f(
        1,
        "Training examples per member canary (the last N positions of history+target; the audited example, the "
        "target from the whole history, is always one). 0 = train.examples_per_user, like a real user.",
    )
    epochs: float = _f(
        3.0,
        "Epochs of both audited runs (replaces train.epochs; DP epochs count users: each user is sampled this many "
        "times in expectation).",
    )
    confidence: float = _f(0.95, "Two-sided Clopper-Pearson confidence of the error-rate bounds behind epsilon_lb.")
    attacks: list[str] = _f(
        ["full", "adapter"],
        "Views of the trained model attacked: 'full' (LoRA adapter + platform head: text and ID scores) and "
        "'adapter' (text score only: what the platform sends).",
    )
    target_epsilon: float | None = _f(
        8.0,
        "Target epsilon of the private run when the privacy group is off (the default); with privacy=dp or "
        "privacy=target_eps the group's settings are audited instead (null = privacy.noise_multiplier).",
    )
    seed: int = _f(0, "Seed of the canaries (histories, targets, member draw) and of the threshold-selection split.")


@dataclass
class EaseConfig:
    """EASE (PROTOCOL.md): the λ grid chosen from on the valid split."""

    lambdas: list[float] = _f(
        [10.0, 50.0, 200.0, 500.0, 1000.0, 3000.0],
        "Grid of the L2 weight λ; the best valid NDCG@10 wins (ties: the earlier λ).",
    )
    platform_lambdas: dict[str, list[float]] = _f(
        {"social": [300.0, 1000.0]}, "Per-platform grids that replace `lambdas` (PROTOCOL.md: social {300, 1000})."
    )


@dataclass
class SASRecConfig:
    """SASRec, ID only (PROTOCOL.md): a causal transformer over item-ID embeddings, full softmax."""

    dim: int = _f(64, "Width of the item-ID embeddings and of the transformer.")
    max_len: int = _f(50, "Newest train items read (and trained on) per user.")
    layers: int = _f(2, "Transformer blocks.")
    heads: int = _f(2, "Attention heads.")
    dropout: float = _f(0.3, "Dropout on the inputs, attention and feed-forward outputs.")
    lr: float = _f(1e-3, "Adam learning rate.")
    batch_size: int = _f(128, "Users per step (every position of a user's sequence is a target).")
    max_epochs: int = _f(100, "Epoch cap; the report says whether valid NDCG@10 was still improving at it.")
    eval_every: int = _f(5, "Score the valid split every N epochs (and after the last).")
    patience: int = _f(3, "Stop after this many valid evaluations without a better NDCG@10.")
    threads: int = _f(0, "torch intra-op threads while training (0 = keep the process's, i.e. train.threads).")


@dataclass
class BaselineConfig:
    """Settings of the learned baselines run by `fedrec baselines` (the 'baseline' config group)."""

    ease: EaseConfig = field(default_factory=EaseConfig)
    sasrec: SASRecConfig = field(default_factory=SASRecConfig)


@dataclass
class FedrecConfig:
    """Top-level configuration (``conf/config.yaml``)."""

    command: str = _f("train", "Set by the CLI.")
    mode: str = _f("centralized", "train: 'local' (one model per platform) or 'centralized' (pooled).")
    seed: int = _f(0, "Global seed.")
    verbose: bool = _f(
        False,
        "Keep third-party warnings, Flower's deprecation notices and every Ray actor's output on the console "
        "(fedrec -v sets it).",
    )
    platforms: dict[str, PlatformConfig] = _f({}, "Selected platforms (the 'platform' config group).")
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    federation: FederationConfig = field(default_factory=FederationConfig)
    privacy: PrivacyConfig = field(default_factory=PrivacyConfig)
    audit: AuditConfig = field(default_factory=AuditConfig)
    baselines: list[str] = _f(
        ["mostpop", "itemknn", "frozen_text", "ease", "sasrec"],
        "Models run by `fedrec baselines`: mostpop, itemknn, frozen_text, ease, sasrec.",
    )
    baseline: BaselineConfig = field(default_factory=BaselineConfig)
    output: str = _f("results.json", "Results file name, written into the Hydra run directory.")
    run_dir: str = _f(
        "", "fedrec export: the fedrec simulate run directory to export ('' = the newest outputs/simulate/*)."
    )
    adapter: str = _f(
        "best", "fedrec export: 'best' (the best round's adapter by cross-platform loss) or 'global' (last)."
    )
    joint_model: str = _f(
        "",
        "fedrec export: where to write the joint model ('' = <run_dir>/joint_model); fedrec recommend: which "
        "joint model to load ('' = the newest outputs/simulate/*/joint_model).",
    )
    user: str = _f("", "fedrec recommend: the user's id as in the platform's data files.")
    k: int = _f(10, "fedrec recommend: number of items to recommend.")
    mmr_lambda: float = _f(
        1.0, "fedrec recommend: 1 = rank by score; lower re-ranks the top 100 for diversity (MMR, in [0, 1])."
    )


CHOICES = {
    "mode": ("local", "centralized"),
    "model.kind": ("seqrec", "two_tower"),
    "model.score": ("cosine", "dot"),
    "model.item_tower": ("frozen", "shared"),
    "eval.loss_weights": ("uniform", "users"),
    "federation.aggregation": ("fedavg", "ffa", "svd"),
    "federation.weighting": ("examples", "uniform"),
    "federation.update_norm_action": ("clip", "reject"),  # fedrec.federated.robust.NORM_ACTIONS
    "federation.robust": ("none", "median", "trimmed_mean", "krum"),  # fedrec.federated.byzantine.ROBUST
    "federation.secure_aggregation": ("none", "secaggplus"),  # server/secagg.py
    "federation.server_optimizer": ("none", "fedavgm", "fedadam"),  # fedrec.federated.server_opt.SERVER_OPTIMIZERS
    "privacy.accountant": ("rdp", "prv"),
    "privacy.rows": ("whole", "one"),  # fedrec.seqrec.rows.Rows.one_target for "one"
    "adapter": ("best", "global"),
}
