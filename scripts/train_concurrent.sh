#!/bin/bash
# Several KeyCLD trainings at once on one GPU, time-boxed; each run directory ends as a tar.
#
#   CACHE=DIR OUT=DIR TRAIN_S=555 SLOTS=4 [JOBS_LIST="name args...;name args..."] scripts/train_concurrent.sh
#
# JOBS_LIST replaces the default job list (entries separated by ';', each a run name followed
# by `keycld train` arguments).
# The runs of benchmarks/results/gpu_* come from this script (commands and timings:
# benchmarks/results/gpu_paper_cartpole*/README.md). Runs resume with `keycld train --resume runs/NAME` when the
# time box cuts them short (every epoch is checkpointed). Each job runs keycld/dm.py or
# ablations/no_constraint.py, which import only `keycld` (a GPU image may lack gymnasium and
# dm_control; datasets must already be in CACHE).
set -u
export KEYCLD_NO_XLA_FLAGS=1 XLA_PYTHON_CLIENT_PREALLOCATE=false PYTHONUNBUFFERED=1 PYTHONPATH=$PWD
CACHE=${CACHE:-${KEYCLD_CACHE:-$HOME/.cache/keycld}}; OUT=${OUT:-runs}
T0=$(date +%s); TRAIN_S=${TRAIN_S:-555}; SLOTS=${SLOTS:-4}
{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv; nproc
  python3 -c "import jax, flax, optax; print('jax', jax.__version__, 'flax', flax.__version__, 'optax', optax.__version__); print(jax.devices())"; } > $OUT/meta.txt 2>&1
cat $OUT/meta.txt
mkdir -p runs
JOBS=(
 "cp-keycld --environment cartpole"
 "cp-nocon --environment cartpole --model no_constraint"
 "cp-keycld-v --environment cartpole --dynamics_lr_factor 1 --num_predicted_steps 8"
 "cp-nocon-v --environment cartpole --model no_constraint --dynamics_lr_factor 1 --num_predicted_steps 8"
 "pd-keycld --environment pendulum"
 "pd-nocon --environment pendulum --model no_constraint"
)
if [ -n "${JOBS_LIST:-}" ]; then IFS=';' read -r -a JOBS <<< "$JOBS_LIST"; fi
declare -A PID
next=0
launch() { set -- ${JOBS[$next]}; name=$1; shift
  entry=keycld/dm.py; case "$*" in *"--model no_constraint"*) entry=ablations/no_constraint.py; set -- ${@/--model/}; set -- ${@/no_constraint/};; esac
  python3 $entry "$@" --cache_dir "$CACHE" --out runs/$name --no_gif --quiet > runs/$name.log 2>&1 &
  PID[$name]=$!; echo "$(( $(date +%s) - T0 ))s start $name"; next=$((next+1)); }
alive() { n=0; for k in "${!PID[@]}"; do kill -0 ${PID[$k]} 2>/dev/null && n=$((n+1)); done; echo $n; }
while [ $next -lt $SLOTS ] && [ $next -lt ${#JOBS[@]} ]; do launch; done
last=0
while true; do
  now=$(( $(date +%s) - T0 )); a=$(alive)
  [ $now -ge $TRAIN_S ] && break
  [ $a -eq 0 ] && [ $next -ge ${#JOBS[@]} ] && break
  # queued jobs start in pairs (a model next to its ablation) when two slots are free
  while [ $next -lt ${#JOBS[@]} ] && [ $(( SLOTS - $(alive) )) -ge 2 ] && [ $now -lt $((TRAIN_S - 150)) ]; do launch; launch; done
  if [ $((now - last)) -ge 60 ]; then last=$now; echo "== ${now}s alive=$a"
    for k in "${!PID[@]}"; do printf '%s: ' $k; tail -n1 runs/$k/metrics.jsonl 2>/dev/null | cut -c1-160; echo; done
    nvidia-smi --query-gpu=utilization.gpu,memory.used --format=csv,noheader; fi
  sleep 5
done
for k in "${!PID[@]}"; do kill ${PID[$k]} 2>/dev/null; done; sleep 3
for k in "${!PID[@]}"; do kill -9 ${PID[$k]} 2>/dev/null; done
echo "== stopped at $(( $(date +%s) - T0 ))s"
for k in "${!PID[@]}"; do echo "--- $k"; tail -c 1500 runs/$k.log | tr '\r' '\n' | tail -n 8; cp runs/$k.log runs/$k/train.log 2>/dev/null
  [ -d runs/$k ] && tar -cf $OUT/$k.tar -C runs $k; done
ls -la $OUT
