"""Experiment configuration: schema, TOML load/save, validation, presets. No Qt here."""
from .schema import (ExperimentConfig, DataConfig, ModelConfig, MoEConfig, PrecisionConfig,
                     EnsembleConfig, TrainConfig, SECTIONS, section_fields, to_dict, from_dict,
                     copy_config)
from .validate import ConfigError, problems, validate, apply_overrides, parse_layer_set
from .toml_io import load, save, loads, dumps
from .presets import PRESETS, default

__all__ = [
    "ExperimentConfig", "DataConfig", "ModelConfig", "MoEConfig", "PrecisionConfig",
    "EnsembleConfig", "TrainConfig", "SECTIONS", "section_fields", "to_dict", "from_dict",
    "copy_config", "ConfigError", "problems", "validate", "apply_overrides", "parse_layer_set",
    "load", "save", "loads", "dumps", "PRESETS", "default",
]
