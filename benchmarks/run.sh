#!/usr/bin/env bash
# The runs behind benchmarks/README.md: CPU, 2 torch threads on the quiet 2-core machine (nothing else
# running); with other jobs on the cores use --threads 1, the fair share. ~25 minutes in all.
set -euo pipefail
export KINETO_LOG_LEVEL=5  # silence torch 2.13's "USDT: ... profiler_start/stop" lines (read at process start)
cd "$(dirname "$0")/.."
S=".venv/bin/sigprop"
P=".venv/bin/python"
R=benchmarks/results
for dt in fp32 bf16; do
  # cpu scale: 6 x 256, T = 128, 2048 tokens/step, all blocks, train and infer interleaved in one run
  $S bench --mode train,infer --dtype $dt --threads 2 --repeats 9 --json $R/cpu_scale_$dt.json --out $R/cpu_scale_$dt
  # the paper's block size 18 x 768 (12 heads), T = 128, batch 8 (1024 tokens/step), V = 8192
  $S bench --blocks pre-ln,parallel,sas,sas-p --depth 18 --width 768 --heads 12 --batch 8 --mode train,infer \
    --dtype $dt --threads 2 --repeats 5 --warmup 1 --json $R/paper_size_$dt.json --out $R/paper_size_$dt
done
# the paper's whole model: 18 x 768 with a 50K vocabulary (GPT-2's 50,257)
$S bench --blocks pre-ln,parallel,sas,sas-p --depth 18 --width 768 --heads 12 --batch 8 --vocab 50257 --mode train,infer \
  --dtype bf16 --threads 2 --repeats 5 --warmup 1 --json $R/paper_size_v50k_bf16.json --out $R/paper_size_v50k_bf16
# where the time goes: op groups per training step, Pre-LN vs SAS vs SAS-P
$P benchmarks/profile_ops.py --blocks pre-ln,sas,sas-p --dtype bf16 --threads 2 --json $R/profile_cpu_scale_bf16.json
$P benchmarks/profile_ops.py --blocks pre-ln,sas,sas-p --dtype bf16 --threads 2 --depth 18 --width 768 --heads 12 \
  --batch 4 --rounds 2 --steps 1 --json $R/profile_paper_size_bf16.json
# torch.compile on CPU (inductor): does it close the gap?
$S bench --blocks pre-ln,sas,sas-p --compile --threads 2 --repeats 7 --no-memory --json $R/cpu_scale_fp32_compiled.json
# memory scaling: fast shaped attention vs its explicit T x T path vs Pre-LN's SDPA, whole models
$S bench --blocks pre-ln,sas-p --depth 2 --seq 128,512,2048,4096 --tokens 4096 --explicit --threads 2 --repeats 5 \
  --json $R/seq_sweep.json --out $R/seq_sweep
# one attention layer at width 256, T = 128 ... 4096
$P benchmarks/attention.py --repeats 5 --json $R/attention.json
# bf16 vs fp32 CPU SDPA kernels (why sigprop's sdpa() upcasts on CPU)
$P benchmarks/sdpa_dtype.py --threads 1
# probe overhead at the default cadence
$S bench --blocks pre-ln,sas-p --mode train --threads 2 --repeats 7 --probes --no-memory --json $R/probes.json
# glibc malloc tuning (sigprop.perf.cpu.tune_malloc) off vs on: process-wide, so two runs
for t in no-tune-malloc tune-malloc; do
  $S bench --blocks pre-ln,sas,sas-p --mode train,infer --threads 2 --repeats 5 --no-memory --$t --json $R/malloc_$t.json
done
# what a probe pass costs, forward and backward, at 18 x 768 (12 heads), T = 1024, batch 8 (peak RSS: malloc tuning off)
SIGPROP_NO_MALLOC_TUNING=1 $P benchmarks/probe_cost.py --threads 1 --out $R/probe_cost.json
