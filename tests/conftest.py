"""Test-wide settings: one torch thread (tiny models; avoids thread oversubscription on 2 cores) and a headless backend."""

import os

os.environ.setdefault("MPLBACKEND", "Agg")

import torch  # noqa: E402

torch.set_num_threads(1)
