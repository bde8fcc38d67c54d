#!/usr/bin/env bash
# The runs behind benchmarks/README.md (CPU; 1 torch thread: fairest when other jobs share the cores).
set -euo pipefail
cd "$(dirname "$0")/.."
S=".venv/bin/sigprop"
R=benchmarks/results
for dt in fp32 bf16; do
  # cpu scale: 6 x 256, T = 128, 2048 tokens/step, all blocks, train and infer interleaved in one run
  $S bench --mode train,infer --dtype $dt --threads 1 --repeats 9 --json $R/cpu_scale_$dt.json --out $R/cpu_scale_$dt
  # paper size 18 x 768 (12 heads), T = 128, batch 2 (what fits a few minutes on 2 shared cores)
  $S bench --blocks pre-ln,parallel,sas,sas-p --depth 18 --width 768 --heads 12 --batch 2 --mode train,infer \
    --dtype $dt --threads 1 --repeats 5 --warmup 1 --json $R/paper_size_$dt.json --out $R/paper_size_$dt
done
# memory scaling: fast shaped attention vs its explicit T x T path vs Pre-LN's SDPA, whole models
$S bench --blocks pre-ln,sas-p --depth 2 --seq 128,512,2048,4096 --tokens 4096 --explicit --threads 1 --repeats 3 \
  --json $R/seq_sweep.json --out $R/seq_sweep
# one attention layer at width 256, T = 128 ... 4096
.venv/bin/python benchmarks/attention.py --repeats 5 --json $R/attention.json
# bf16 vs fp32 CPU SDPA kernels (why sigprop's sdpa() upcasts on CPU)
.venv/bin/python benchmarks/sdpa_dtype.py --threads 1
# probe overhead at the default cadence
$S bench --blocks pre-ln,sas-p --mode train --threads 1 --repeats 7 --probes --no-memory --json $R/probes.json
