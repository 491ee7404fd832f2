"""Typed configuration (pydantic), one module per domain, shared by the CLI and the flows.

- `base`: strict models, the layers (defaults < YAML < `CGAUG_*` environment < flags), `ConfigError`;
- `generate`: the generation tree `CGAugConfig`, `load_config`, the output fingerprint;
- `orchestration`: how the `cgaug` flow schedules shards (not fingerprinted);
- `train`: the training tree `TrainConfig`, its presets and `load_train_config`;
- `eval`: `EvalOptions` of an evaluation run.

The public names are re-exported here: ``from cgaug.config import CGAugConfig``.
"""

from cgaug.config.base import ENV_NESTED, ENV_PREFIX, TRAIN_ENV_SECTION, ConfigError, StrictModel, env_layer
from cgaug.config.eval import EvalOptions, FprRule
from cgaug.config.generate import (
    REFERENCE_PLACES,
    TINY_FILTERS,
    TINY_GENERATOR,
    CGAugConfig,
    ComposeConfig,
    DtypeName,
    FilterConfig,
    FilterMode,
    GeneratorConfig,
    PromptConfig,
    RunConfig,
    SchedulerName,
    load_config,
)
from cgaug.config.orchestration import DEFAULT_SHARD_DEPLOYMENT, Orchestration
from cgaug.config.train import (
    TRAIN_PRESETS,
    TrainConfig,
    TrainDataConfig,
    TrainLossConfig,
    TrainModelConfig,
    TrainRunConfig,
    TrainStageConfig,
    load_train_config,
)

__all__ = [
    "DEFAULT_SHARD_DEPLOYMENT", "ENV_NESTED", "ENV_PREFIX", "REFERENCE_PLACES", "TINY_FILTERS", "TINY_GENERATOR",
    "TRAIN_ENV_SECTION", "TRAIN_PRESETS", "CGAugConfig", "ComposeConfig", "ConfigError", "DtypeName", "EvalOptions",
    "FilterConfig", "FilterMode", "FprRule", "GeneratorConfig", "Orchestration", "PromptConfig", "RunConfig",
    "SchedulerName", "StrictModel", "TrainConfig", "TrainDataConfig", "TrainLossConfig", "TrainModelConfig",
    "TrainRunConfig", "TrainStageConfig", "env_layer", "load_config", "load_train_config",
]
