#!/bin/bash
# Scratch: run recipes of experiments/cnn_proxies.py in parallel on a GPU machine.
# usage: bash experiments/gpu_sweep.sh DATA OUTDIR PROTOCOLS RECIPE...
data=$1; out=$2; prots=$3; shift 3
mkdir -p /tmp/p/edgevib
for f in edgevib/*; do ln -sf "$PWD/$f" /tmp/p/edgevib/; done
for d in models edge cloud; do ln -sfn "$PWD/$d" /tmp/p/edgevib/$d; done
export PYTHONPATH=/tmp/p PYTHONUNBUFFERED=1 OMP_NUM_THREADS=1 MKL_NUM_THREADS=1
python3 -c "import torch; print(torch.__version__, torch.cuda.get_device_name())"
for r in "$@"; do
  python3 experiments/cnn_proxies.py "$data" "$r" --device cuda --protocols "$prots" > "$out/${r/@/_s}.log" 2>&1 &
done
wait
tail -n 3 "$out"/*.log
