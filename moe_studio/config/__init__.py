"""Experiment configuration: schema, TOML load/save, validation, presets. No Qt here."""
from .schema import (ExperimentConfig, DataConfig, ModelConfig, MoEConfig, PrecisionConfig,
                     EnsembleConfig, TrainConfig, SECTIONS, section_fields, to_dict)
from .validate import (ConfigError, problems, validate, apply_overrides, parse_layer_set, from_dict,
                       copy_config)
from .toml_io import save, loads, dumps
from .inputs import load
from .presets import PRESETS, default

__all__ = [
    "ExperimentConfig", "DataConfig", "ModelConfig", "MoEConfig", "PrecisionConfig",
    "EnsembleConfig", "TrainConfig", "SECTIONS", "section_fields", "to_dict", "from_dict",
    "copy_config", "ConfigError", "problems", "validate", "apply_overrides", "parse_layer_set",
    "load", "save", "loads", "dumps", "PRESETS", "default",
]
