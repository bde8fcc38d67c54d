"""The CPU allocator tuning removes the per-step page faults on big activations (and can be turned off)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc mallopt")

# Allocate, touch and free a 64 MB tensor (above glibc's 32 MB mmap ceiling) twelve times; print the page
# faults of the last eight: each fresh mmap faults in all 16,384 pages again, a reused heap block none.
# The tuned heap settles within the first two or three steps (it may extend itself once more), so four
# are warm-up.
SCRIPT = """
import resource, sys, torch
from sigprop.perf.cpu import tune_malloc
print(tune_malloc())
def step():
    x = torch.ones(16 * 2**20)
    del x
for _ in range(4):
    step()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(8):
    step()
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def _faults(opt_out: bool) -> tuple[str, int]:
    env = {k: v for k, v in os.environ.items() if k != "SIGPROP_NO_MALLOC_TUNING"}
    if opt_out:
        env["SIGPROP_NO_MALLOC_TUNING"] = "1"
    out = subprocess.run([sys.executable, "-c", SCRIPT], env=env, capture_output=True, text=True, check=True).stdout.split()
    return out[0], int(out[1])


def test_tuned_malloc_reuses_big_blocks_without_page_faults():
    tuned, faults = _faults(opt_out=False)
    assert tuned == "True"
    # at most two late heap extensions (a busy machine's heap layout gave two once); 8 x 16,384 pages untuned
    assert faults <= 2 * 16_384


def test_opt_out_leaves_glibc_alone():
    tuned, faults = _faults(opt_out=True)
    assert tuned == "False"
    assert faults > 8 * 16_384 * 0.9
