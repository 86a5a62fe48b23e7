#!/usr/bin/env bash
# One lent-GPU session in one call (/work/.library/device/METHOD.md): the paper-scale benchmark
# eager and with CUDA graphs, and a bf16 fit/test of the CLI on a simulated subject. Wheels the
# GPU image lacks are carried in .whl/ (../shared/tools/gpu-wheels.sh). Logs and JSON go to $OUT;
# the tables are printed last. Usage on the device machine: bash tools/gpu_session.sh [budget_s]
set -u
OUT=${OUT:-/tmp/gpu-out}; mkdir -p "$OUT"
T0=$(date +%s); BUDGET=${1:-540}
left() { echo $(( BUDGET - ($(date +%s) - T0) )); }
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$PWD/.gpu-site" .whl/*.whl \
  || { echo "wheel install failed"; exit 1; }
export PYTHONPATH="$PWD/.gpu-site:$PWD"
{ nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.sm,clocks.mem --format=csv
  python3 -c "import torch, lightning; print('torch', torch.__version__, 'lightning', lightning.__version__, torch.cuda.get_device_name())"
  nproc; df -h /tmp | tail -1; } > "$OUT/env.txt" 2>&1
cat "$OUT/env.txt"

step() {  # name timeout_s command...: run with a time limit, log to $OUT/name.log
  local name=$1 lim=$2; shift 2
  local l; l=$(left); (( lim > l - 5 )) && lim=$(( l - 5 ))
  if (( lim < 20 )); then echo "== $name: skipped (budget)"; return; fi
  local t=$(date +%s)
  timeout -k 5 "$lim" "$@" > "$OUT/$name.log" 2>&1; local rc=$?
  echo "== $name: rc $rc in $(( $(date +%s) - t )) s (limit $lim)" | tee -a "$OUT/steps.txt"
}

# 1. one synthetic paper-size cache (27,000 frames x 91,282 + EEG, fp16) shared by both benchmarks
step cache 40 python3 -c "
import time; from eeg2fmri.experiments.bench.scales import SCALES; from eeg2fmri.experiments.bench.cache import write_synthetic_cache as w
c = SCALES['paper']; t = time.time(); w('/tmp/paper.h5', c['every'], c['n_clips'], c['clip_frames']); print('written in', time.time() - t)"
# 2. paper scale, eager
step bench_none 120 python3 -m eeg2fmri bench --scale paper --compile none --data_path /tmp/paper.h5 --out "$OUT/bench_none.json"
# 3. paper scale, CUDA graphs on the DiT (reduce-overhead), default compile on the autoencoder and EEG encoder
step bench_ro 210 python3 -m eeg2fmri bench --scale paper --compile reduce-overhead --data_path /tmp/paper.h5 --out "$OUT/bench_ro.json"
# 4. the CLI on the GPU: simulate, prepare, fit (bf16, validation with DDIM / InterRecon / figure), test
step cli 150 bash -c "
set -e
py() { python3 \"\$@\"; }
py -m eeg2fmri simulate --out_dir /tmp/sim --subjects [1] --scale ci --n_runs 3 --run_seconds 200 --signal_gain 3
py -m eeg2fmri prepare --subject_dir /tmp/sim/sub_0001 --out_dir /tmp/prep
py -m eeg2fmri fit --config configs/demo.yaml --data.data_path /tmp/prep/sub_0001.h5 --trainer.enable_progress_bar false \
  --trainer.max_epochs 5 --trainer.logger.init_args.save_dir /tmp/runs
py -m eeg2fmri test --config configs/demo.yaml --data.data_path /tmp/prep/sub_0001.h5 --trainer.enable_progress_bar false \
  --trainer.logger.init_args.save_dir /tmp/runs --ckpt_path /tmp/runs/demo/latest/checkpoints/last.ckpt
mkdir -p $OUT/cli; cp /tmp/runs/demo/latest/checkpoints/*.csv /tmp/runs/demo/latest/checkpoints/*.json /tmp/runs/demo/latest/checkpoints/*.png $OUT/cli/ 2>/dev/null || true; nvidia-smi --query-gpu=memory.used --format=csv"
# 5. the paper's config through the CLI on the paper-size cache: a few hundred bf16 steps with one
#    validation (DDIM-50, InterRecon) at the end; Lightning's timer callback is not used, so the step
#    time is the fit's wall time over the steps (start-up and validation included: an upper bound). Added after the
#    2026-11-27 session (its device time was spent): not yet run on a device.
step cli_sub1 240 bash -c "
python3 - <<'PY'
import subprocess, sys, time, torch
t = time.time()
subprocess.run([sys.executable, '-m', 'eeg2fmri', 'fit', '--config', 'configs/sub1.yaml', '--data.data_path', '/tmp/paper.h5',
    '--trainer.max_steps', '300', '--trainer.val_check_interval', '300', '--trainer.limit_val_batches', '2',
    '--evaluator.every_n_epochs', '1', '--trainer.enable_progress_bar', 'false', '--trainer.default_root_dir', '/tmp/sub1',
    '--compile.mode', 'reduce-overhead'], check=True)
print('fit of 300 steps + 1 validation: %.1f s wall' % (time.time() - t))
PY"

echo; cat "$OUT/steps.txt"
for n in cache cli cli_sub1; do echo "--- $n (tail)"; tail -n 8 "$OUT/$n.log"; done
for n in bench_none bench_ro; do echo "--- $n"; grep -A 30 "^eeg2fmri bench" "$OUT/$n.log" || tail -n 25 "$OUT/$n.log"; done
