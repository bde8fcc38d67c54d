"""sigprop: signal-propagation analysis of transformer blocks ("Simplifying Transformer Blocks", He & Hofmann 2024).

    import sigprop as sp
    model = sp.build_model("sas", depth=18, width=768, heads=12)    # any preset, any knob (sets=["beta_ff=0.2"])
    a = sp.analyze(["pre-ln", "skipless", "sas"])                     # rank collapse at init, with theory
    with sp.probe(model) as p: model(idx)                             # per-layer metrics of any nn.Module
    s = sp.sweep(["pre-ln", "sas"], widths=[64, 256], seeds=4)        # a grid of analyze runs: bands, theory convergence
    p = sp.phase("shaped-alpha-gamma")                                # rank-collapse phase diagram from theory
"""

from sigprop.studies.analysis import Analysis, analyze
from sigprop.perf.benchmark import bench
from sigprop.blocks import PRESETS, BlockSpec, ModelConfig, Transformer, build_model, get_spec, param_groups
from sigprop.data import load_data
from sigprop.errors import SigpropError
from sigprop.probes import gains, measure, probe, probe_points
from sigprop.runs import load_runs
from sigprop.studies.phases import Phase, phase
from sigprop.studies.sweeps import Sweep, sweep
from sigprop.studies.theory import propagate
from sigprop.training import train

BLOCKS = PRESETS

__all__ = [
    "BLOCKS",
    "PRESETS",
    "Phase",
    "Analysis",
    "BlockSpec",
    "ModelConfig",
    "SigpropError",
    "Sweep",
    "Transformer",
    "analyze",
    "bench",
    "build_model",
    "gains",
    "get_spec",
    "load_data",
    "load_runs",
    "phase",
    "measure",
    "param_groups",
    "probe",
    "probe_points",
    "propagate",
    "sweep",
    "train",
]
__version__ = "0.1.0"
