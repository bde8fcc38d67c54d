"""sigprop: signal-propagation analysis of transformer blocks ("Simplifying Transformer Blocks", He & Hofmann 2024)."""

from sigprop.blocks import PRESETS, BlockSpec, ModelConfig, Transformer, build_model, get_spec, param_groups
from sigprop.errors import SigpropError

BLOCKS = PRESETS

__all__ = ["BLOCKS", "PRESETS", "BlockSpec", "ModelConfig", "SigpropError", "Transformer", "build_model", "get_spec", "param_groups"]
__version__ = "0.1.0"
