"""The ``federation`` group's schema (``conf/federation/``): rounds, aggregation, robustness, faults."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from fedrec.config.fields import help_field as _f


@dataclass
class FederationConfig:
    """Federated training (``fedrec simulate`` and the Flower apps in ``server/``, ``clients/``)."""

    rounds: int = _f(5, "Federated rounds (train on the clients, aggregate, evaluate on the clients).")
    fraction_train: float = _f(1.0, "Fraction of the connected clients sampled for training each round.")
    min_clients: int = _f(
        0, "Minimum clients to wait for and sample each round (0 = every client: platforms x shards_per_platform)."
    )
    shards_per_platform: int = _f(
        1,
        "Clients per platform: each platform's users split into this many disjoint shards (user index modulo the "
        "shard count), one client each, named <platform>/<shard>; per-platform results combine the shards "
        "(evaluation user-weighted, training example-weighted). 1 = one client per platform.",
    )
    client_cache: int = _f(
        16,
        "Clients kept built per simulation process (least recently used evicted; a client's platform-local state is "
        "on disk, so eviction costs only a rebuild). A platform's data, encoder and item side are built once per "
        "process and shared by its shards.",
    )
    object_store_mib: int = _f(
        0, "fedrec simulate: cap on Ray's object store in MiB (0 = Ray's default, 30% of the machine's memory)."
    )
    local_epochs: float = _f(
        0.2, "Local passes over a client's training examples per round (fractions allowed; 5 x 0.2 = one epoch)."
    )
    local_steps: int = _f(-1, "Cap on a client's optimizer steps per round (-1 = no cap).")
    aggregation: str = _f(
        "fedavg",
        "LoRA aggregation: 'fedavg' (average A and B separately), 'ffa' (A frozen at the shared seed, only B "
        "trained, sent and averaged: exact, half the bytes) or 'svd' (average of the products B·A, "
        "re-factorised to rank r by SVD).",
    )
    weighting: str = _f(
        "examples",
        "A client update's aggregation weight: 'examples' (its reported training examples, FedAvg's weighting: "
        "the largest platform dominates) or 'uniform' (every accepted client alike, so a small platform counts as "
        "much as a large one).",
    )
    update_norm_bound: float = _f(
        0.0,
        "Largest L2 norm of a client update's change from the global adapter it started from, over every tensor it "
        "sends (0 = no bound). An update over it is rejected or clipped (update_norm_action), logged with its norm.",
    )
    update_norm_action: str = _f(
        "reject",
        "What happens to an update over update_norm_bound: 'reject' (excluded from the round) or 'clip' (scaled "
        "back onto the bound, its direction kept).",
    )
    max_weight_share: float = _f(
        1.0,
        "Cap on each client's share of the aggregation weights, in (0, 1] (1 = no cap): a client claiming a huge "
        "example count gets at most this share, the excess goes to the others in proportion to their weights. "
        "With fewer than 1/cap accepted clients every client gets an equal share.",
    )
    server_optimizer: str = _f(
        "none",
        "Server-side optimiser on each round's aggregate, with state across rounds (fedrec.federated.server_opt, "
        "Flower's formulas): 'none' (the aggregate is the new global state: FedAvg), 'fedavgm' (SGD with server "
        "momentum on the pseudo-gradient) or 'fedadam'.",
    )
    server_lr: float = _f(1.0, "Server optimiser's learning rate (Flower's server_learning_rate / eta).")
    server_momentum: float = _f(0.9, "fedavgm: server momentum, in [0, 1).")
    server_beta_1: float = _f(0.9, "fedadam: first-moment decay, in [0, 1).")
    server_beta_2: float = _f(0.99, "fedadam: second-moment decay, in [0, 1).")
    server_tau: float = _f(1e-3, "fedadam: adaptivity (added to the root of the second moment), > 0.")
    robust: str = _f(
        "none",
        "Byzantine-robust aggregation of the accepted updates instead of the weighted mean: 'none' (the "
        "aggregation mode's weighted mean), 'median' (coordinate-wise median, as Flower's FedMedian), "
        "'trimmed_mean' (coordinate-wise mean after dropping robust_trim_fraction of the values at each end, as "
        "FedTrimmedAvg) or 'krum' (the one update closest to its n - robust_byzantine - 2 nearest others, as "
        "Krum). All three ignore the example counts. fedavg and ffa only: refused with aggregation=svd (its "
        "merge of the products B·A is not a coordinate-wise statistic).",
    )
    robust_trim_fraction: float = _f(
        0.2,
        "robust=trimmed_mean: the fraction of the updates dropped at each end of every coordinate, in [0, 0.5) "
        "(int(fraction * n) values each side; FedTrimmedAvg's beta).",
    )
    robust_byzantine: int = _f(
        0,
        "robust=krum: the number of malicious clients tolerated (Krum's f, >= 0); each update is scored by its "
        "squared distances to its max(1, n - f - 2) nearest others.",
    )
    secure_aggregation: str = _f(
        "none",
        "Secure aggregation of the training replies: 'none' (the server receives every client's adapter) or "
        "'secaggplus' (Flower's SecAgg+ protocol, four message exchanges per round: the server learns only the "
        "example-weighted sum of the sampled clients' adapters, never one of them; each client's example count "
        "and train metrics still travel in the clear). Because no single update is ever seen, everything that "
        "checks or changes one is impossible and refused with it: aggregation=svd (it merges per-client "
        "products), robust != none, update_norm_bound > 0, max_weight_share < 1, weighting=uniform; a NaN or "
        "mis-shaped update is only noticed in the sum (the round is then discarded). A platform's update still "
        "reaches the sum, and with 2 clients the sum minus one's own reveals the other's: DP protects users.",
    )
    secagg_num_shares: float = _f(
        1.0,
        "secaggplus: shares each client's secret keys are split into (one per neighbour, itself included): "
        "<= 1 a proportion of the sampled clients (1.0 = all of them), else an integer count >= 3 (Flower's "
        "num_shares).",
    )
    secagg_reconstruction_threshold: float = _f(
        0.67,
        "secaggplus: shares needed to rebuild a client's keys (Flower's reconstruction_threshold): <= 1 a "
        "proportion of num_shares, else an integer count < num_shares; never below 2. Higher: more clients must "
        "collude with the server to unmask one; lower: more dropouts tolerated (with 2 clients it is always 2: "
        "no dropout tolerated).",
    )
    secagg_clipping_range: float = _f(
        8.0,
        "secaggplus: every value a client sends, times its weight examples / secagg_max_weight, is quantized "
        "within [-range, range]; a client whose weighted values exceed it fails its reply rather than be "
        "silently clipped. The quantization step is 2 * range / secagg_quantization_range.",
    )
    secagg_quantization_range: int = _f(
        2**26,
        "secaggplus: integer levels of the quantization (Flower's quantization_range). The mean's error per "
        "value is below clients * 2 * clipping_range / range / (sum of examples / max_weight). clients x range "
        "must stay below the 2**32 modulus (checked).",
    )
    secagg_max_weight: float = _f(
        100000.0,
        "secaggplus: the largest example count one client may weight its update with in a round (Flower's "
        "max_weight); a client with more fails its reply. Smaller is more precise (see "
        "secagg_quantization_range).",
    )
    nodes: dict[Any, str] = _f(
        {},
        "Registered identities: node id -> the client it serves (its platform, or <platform>/<shard>), e.g. "
        "++federation.nodes='{6512794135: video, 8120443906: ecommerce}' with the node ids `flwr supernode "
        "register` printed. A reply is taken for the client its node is registered as; a node not listed gets no "
        "messages and its replies are refused, a reply claiming another client than its node's is refused (both "
        "logged). {} = first-contact binding: the first node to answer for a client is bound to it, other nodes "
        "claiming it later are refused and get nothing more. In-process runs (fedrec.federated.local) name their "
        "nodes local:<client>.",
    )
    evaluate_initial: bool = _f(
        False,
        "Score the initial adapter on every client's validation split before round 1 (round 0): the start of the "
        "cross-platform loss curve, in results.json as federation.initial (rounds-to-quality measures the "
        "improvement from it). One extra evaluation per run.",
    )
    resume: bool = _f(False, "Continue from the checkpoint in checkpoint_dir (same run directory) if there is one.")
    checkpoint_every: int = _f(1, "Write the server checkpoint every N rounds (the last round is always written).")
    checkpoint_dir: str = _f("", "Server checkpoint folder ('' = <run directory>/checkpoint).")
    client_state_dir: str = _f(
        "",
        "Folder of the clients' platform-local state in simulation ('' = <run directory>/client_state), and of the "
        "simulated nodes' privacy ledgers (<folder>/privacy): runs given the same folder share the ledgers, so a "
        "second run on the same data starts from the first run's epsilon.",
    )
    client_cpus: float = _f(1.0, "CPUs the simulation engine reserves per client; also the client's torch threads.")
    eval_max_users: int = _f(
        -1,
        "Validation users scored per client each round: a fixed random subset (-1 = all). The final "
        "test scores every user.",
    )
    wait_timeout: float = _f(
        120.0,
        "Seconds the server waits, before each round's training, for every client's node to be connected; at "
        "the deadline the round goes on with the nodes there if they are at least min_clients, else the run "
        "stops with a QuorumError naming how many were there and needed. Evaluation never waits again: it goes "
        "to the nodes that are connected. Finite, > 0.",
    )
    round_timeout: float = _f(
        3600.0,
        "Seconds the server waits for the clients' replies in a round (train, and again evaluate): a node that "
        "has not replied by then is left out of that step. Finite, > 0.",
    )
    compare_local: bool = _f(
        True,
        "fedrec simulate: afterwards train each platform's local-only model with the same local compute as its "
        "client (steps over all rounds) and score every local adapter on every platform (the transfer matrix).",
    )
    compare_parallel: bool = _f(
        True,
        "fedrec simulate, model=seqrec: train each platform's local-only model in a process of its own (one torch "
        "thread per core it gets), as the simulation's clients; false: one after another in the main process.",
    )
    compare_baselines: list[str] = _f(
        ["mostpop", "itemknn"],
        "fedrec simulate: protocol baselines scored beside the joint model ([] = none).",
    )
    export_joint_model: bool = _f(
        True, "fedrec simulate: write the joint model (merged backbone + item indexes) to <run dir>/joint_model."
    )
