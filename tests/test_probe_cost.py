"""benchmarks/probe_cost.py runs on a tiny model and reports every case with its ratios."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "probe_cost.py"


def test_probe_cost_script_tiny(tmp_path, capsys) -> None:
    if not Path("/proc/self/clear_refs").exists():
        pytest.skip("peak RSS needs Linux /proc")
    spec = importlib.util.spec_from_file_location("probe_cost", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    out = tmp_path / "cost.json"
    result = module.main(["--depth", "2", "--width", "32", "--heads", "4", "--seq-len", "16", "--batch", "2", "--vocab-size", "64", "--out", str(out)])
    assert set(result["cases"]) == {"forward", "forward + probe (before)", "forward + probe", "backward",
                                    "backward + probe (before)", "backward + probe"}
    assert all(c["time_s"] > 0 and c["peak_mb"] >= 0 and c["tensor_mb"] >= 0 for c in result["cases"].values())
    for case in ("forward + probe (before)", "backward + probe"):
        assert {"time_ratio", "paired_time_ratio", "memory_ratio", "tensor_memory_ratio"} <= set(result["cases"][case])
    assert json.loads(out.read_text())["settings"]["seq_len"] == 16
    assert "| forward + probe |" in capsys.readouterr().out
    small = module.main(["--depth", "1", "--width", "16", "--heads", "2", "--seq-len", "8", "--batch", "1", "--vocab-size", "32",
                         "--forward-only"])
    assert set(small["cases"]) == {"forward", "forward + probe (before)", "forward + probe"}
    with pytest.raises(SystemExit, match="--repeats"):
        module.main(["--repeats", "0"])
