"""Test-wide settings: one torch thread (tiny models; avoids thread oversubscription on 2 cores), a headless backend,
Triton's interpreter where there is no GPU; the ci-scale token data shared by the training tests."""

import os
from pathlib import Path

os.environ.setdefault("MPLBACKEND", "Agg")

import pytest  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(1)
# Without a GPU, Triton kernels (attn_impl='fused', tests/test_fused.py) run in its interpreter, which must be on
# before triton is first imported (torch._dynamo imports it)
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")


@pytest.fixture(scope="session")
def cache(tmp_path_factory) -> Path:
    """The session's data cache (SIGPROP_CACHE for CLI tests)."""
    return tmp_path_factory.getbasetemp() / "sigprop-cache"


@pytest.fixture(scope="session")
def data(cache):
    """The ci scale's token data (built once per session)."""
    from sigprop.data import load_data
    from sigprop.training import SCALES

    c = SCALES["ci"]
    return load_data("code", vocab_size=c.vocab_size, seq_len=c.seq_len, cache_dir=cache, progress=False, max_bytes=c.max_bytes)
