#!/usr/bin/env bash
# GPU readiness check (issue 14): every agent briefly on device=cuda, then Atari PPO and DQN throughput
# (env steps/s, from each run's final.json) on CPU and on the GPU. One prepared script, about 10 minutes on
# one GPU and 16 cores; each command is capped by `timeout`, a failure is recorded and the script goes on.
#
#   bash benchmarks/gpu_smoke.sh [OUT_DIR]          (default: $OUT, else ./gpu_smoke_out)
#
# Writes OUT_DIR/summary.tsv (name, device, status, seconds, env_steps, steps_per_s = env_steps / wall_s of
# final.json, which includes the final evaluation) and, per run, the --json output and stderr. Needs the atari extra for the throughput part (pip install -e '.[atari]').
set -u
OUT_DIR=${1:-${OUT:-gpu_smoke_out}}
PY=${PY:-.venv/bin/python}
mkdir -p "$OUT_DIR/runs"
SUMMARY="$OUT_DIR/summary.tsv"
printf 'name\tdevice\tstatus\tseconds\tenv_steps\tsteps_per_s\n' > "$SUMMARY"
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 PYTHONHASHSEED=0

"$PY" - <<'PYEOF' | tee "$OUT_DIR/device.txt"
import torch
print("torch", torch.__version__, "cuda", torch.version.cuda, "available", torch.cuda.is_available())
if torch.cuda.is_available():
    print(torch.cuda.get_device_name(0))
PYEOF

# run NAME DEVICE LIMIT_S AGENT ARGS...   (one `rlkit train`, its result appended to summary.tsv)
run() {
  local name=$1 device=$2 limit=$3 agent=$4; shift 4
  local start end status
  start=$(date +%s.%N)
  if timeout "$limit" "$PY" -m rlkit.apps.cli train "$agent" --set eval_episodes=2 "$@" --set device="$device" --set eval_every=0 \
      --set checkpoint_every=0 --run-dir "$OUT_DIR/runs/$name-$device" --no-progress --json \
      > "$OUT_DIR/$name-$device.json" 2> "$OUT_DIR/$name-$device.err"; then status=ok; else status="failed:$?"; fi
  end=$(date +%s.%N)
  "$PY" - "$OUT_DIR/$name-$device.json" "$name" "$device" "$status" "$start" "$end" >> "$SUMMARY" <<'PYEOF'
import json, sys
path, name, device, status, start, end = sys.argv[1:]
try:
    final = json.load(open(path))
    steps, wall = final["env_steps"], final["wall_s"]
    rate = f"{steps / wall:.1f}"
except Exception:
    steps, rate = "", ""
print(f"{name}\t{device}\t{status}\t{float(end) - float(start):.1f}\t{steps}\t{rate}")
PYEOF
  tail -n 1 "$SUMMARY"
}

# 1. every agent briefly on the GPU (tiny budgets: this checks devices, not learning)
run ppo-cartpole cuda 120 ppo --env CartPole-v1 --steps 4096 --set num_envs=4 --set n_steps=256 --set batch_size=128
run ppo-pendulum cuda 120 ppo --env Pendulum-v1 --steps 4096 --set num_envs=4 --set n_steps=256 --set batch_size=128 \
    --set normalize_obs=true --set normalize_reward=true
run sac cuda 120 sac --env Pendulum-v1 --steps 1500 --set learning_starts=500
run dqn cuda 120 dqn --env CartPole-v1 --steps 3000 --set learning_starts=1000
run ddpg cuda 120 ddpg --env Pendulum-v1 --steps 1500 --set learning_starts=500
run td3 cuda 120 td3 --env Pendulum-v1 --steps 1500 --set learning_starts=500
run a2c cuda 120 a2c --env CartPole-v1 --steps 4000
run a3c cuda 120 a3c --env CartPole-v1 --steps 4000 --set num_workers=2 --set start_method=spawn
timeout 120 "$PY" -m rlkit.apps.cli demos record --env CartPole-v1 --policy "$OUT_DIR/runs/ppo-cartpole-cuda" \
    --episodes 5 --out "$OUT_DIR/demos" --quiet > "$OUT_DIR/demos.log" 2>&1 || echo "demos record failed" >> "$SUMMARY"
run bc cuda 120 bc --env CartPole-v1 --demos "$OUT_DIR/demos" --set epochs=5
run gail cuda 180 gail --env CartPole-v1 --demos "$OUT_DIR/demos" --steps 4096

# 2. Atari throughput, CPU against GPU (the ALE episode cap keeps the final 1-episode evaluation short)
ATARI=(--set eval_episodes=1 --set 'env_kwargs={max_num_frames_per_episode: 2000}')
for device in cpu cuda; do
  run ppo-pong "$device" 300 ppo --preset pong --steps 16384 "${ATARI[@]}"
  run dqn-pong "$device" 300 dqn --preset pong --steps 20000 --set learning_starts=5000 "${ATARI[@]}"
done

echo "wrote $SUMMARY"
column -t -s $'\t' "$SUMMARY" 2>/dev/null || cat "$SUMMARY"
