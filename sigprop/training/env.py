"""Where a number came from (versions, device, threads, host, commit) and whether bf16 pays off here."""

from __future__ import annotations

import platform
import socket
import subprocess
import sys
import time
from pathlib import Path

import torch

from sigprop.training.config import TrainConfig


def use_bf16(cfg: TrainConfig, device: torch.device) -> bool:
    """bf16 autocast: on CUDA, and on CPU at width >= 256 where it is measured faster (README, closing note)."""
    if cfg.precision != "auto":
        return cfg.precision == "bf16"
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    return cfg.width >= 256 and cpu_bf16_supported()


def cpu_bf16_supported() -> bool:
    """CPUs with native bf16 (AVX512-BF16 / AMX) make autocast pay off; elsewhere it is emulated and slow."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def env_info(device: torch.device, world: int) -> dict:
    """Versions, device, threads, host and git commit: enough to say where a number came from."""
    info = {
        "python": sys.version.split()[0],
        "torch": torch.__version__,
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "device": str(device),
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else cpu_name(),
        "threads": torch.get_num_threads(),
        "world_size": world,
        "hostname": socket.gethostname(),
        "cpu_bf16": cpu_bf16_supported(),
        "git_commit": git_commit(),
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    return info


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "cpu"


def git_commit() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=Path(__file__).parent, capture_output=True, text=True, timeout=5)
        return out.stdout.strip() or None if out.returncode == 0 else None
    except (OSError, subprocess.SubprocessError):
        return None
