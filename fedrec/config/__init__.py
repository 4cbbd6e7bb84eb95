"""Structured configuration: the schema behind every file in ``conf/``, its checks, its composition.

Each dataclass field carries its help text in ``metadata["help"]`` (:mod:`fedrec.config.schema`);
Hydra validates ``conf/`` and every command-line override against these classes, so a key that
does not exist or a value of the wrong type is an error naming the key. Values the type system
cannot check are checked by :func:`validate` (:mod:`fedrec.config.checks`); :func:`compose_config`
and :func:`conf_dir` (:mod:`fedrec.config.compose`) compose ``conf/`` outside a Hydra app.
"""

from fedrec.config.checks import validate, validate_baseline, validate_privacy, validate_seq
from fedrec.config.compose import compose_config, conf_dir, platform_folder, register_configs
from fedrec.config.schema import (
    CHOICES,
    AuditConfig,
    BaselineConfig,
    DataConfig,
    EaseConfig,
    EvalConfig,
    FederationConfig,
    FedrecConfig,
    ModelConfig,
    PlatformConfig,
    PrivacyConfig,
    SASRecConfig,
    SeqConfig,
    TrainConfig,
)

__all__ = [
    "CHOICES",
    "AuditConfig",
    "BaselineConfig",
    "DataConfig",
    "EaseConfig",
    "EvalConfig",
    "FederationConfig",
    "FedrecConfig",
    "ModelConfig",
    "PlatformConfig",
    "PrivacyConfig",
    "SASRecConfig",
    "SeqConfig",
    "TrainConfig",
    "compose_config",
    "conf_dir",
    "platform_folder",
    "register_configs",
    "validate",
    "validate_baseline",
    "validate_privacy",
    "validate_seq",
]
