"""The models: BlockSpec presets, one Block class, decoder/encoder Transformer."""

from sigprop.blocks.model import ModelConfig, Transformer, build_model, param_groups
from sigprop.blocks.spec import PRESETS, BlockSpec, beta_ff_for_depth, get_spec, preset_names

__all__ = ["PRESETS", "BlockSpec", "ModelConfig", "Transformer", "beta_ff_for_depth", "build_model", "get_spec", "param_groups", "preset_names"]
