#!/bin/bash
# Waits for the learned run's final evaluation, stops the old compare process (its real run would be
# budgeted in wall clock, meaningless while the process is starved), then trains the real baseline
# with a CPU-time budget and writes the comparison.
cd /work/main
D=runs/sb3/compare-sac-pendulum
while [ ! -s $D/learned/results.md ]; do sleep 10; done
sleep 5
kill 16904
echo "learned done $(date)"
nice -n 15 .venv/bin/python agents/train_sb3.py --algo sac --env KeyCLD-Pendulum-Real-v0 --timesteps 100000000 \
  --wall_clock_s 1200 --clock cpu --checkpoint runs/cpu-pendulum-yes --eval_episodes 5 --curve_episodes 2 \
  --eval_every_s 300 --net_arch 64,64 --out $D/real-cpu > $D/real-cpu.log 2>&1
echo "real done $(date) rc=$?"
.venv/bin/python -c "
from agents.train_sb3 import write_comparison
print(write_comparison('$D/learned', '$D/real-cpu', '$D'))"
echo "all done $(date)"
