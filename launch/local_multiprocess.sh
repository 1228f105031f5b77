#!/usr/bin/env bash
# N processes on this machine train together through jax.distributed (CPU, gloo collectives):
# the multi-host code path of a TPU pod, on a laptop. Each process gets its own simulated CPU
# devices; process 0 prints, every process writes launch logs; Ctrl-C / SIGTERM is forwarded so
# every process saves a checkpoint and stops; rerunning the same command resumes.
#
#   launch/local_multiprocess.sh [-n NPROC] [-d DEVICES_PER_PROC] [-p PORT] [-l LOG_DIR] \
#       [-c COMMAND] -- <flags of the command>
#
#   launch/local_multiprocess.sh -n 2 -d 2 -- --jsonl data/instruct.jsonl \
#       --spm_model tok/spiece.model --config configs/pretrain.py:tiny --mesh data=-1 \
#       --batch_size 8 --ckpt_out checkpoints/lm_mp
#
# Environment: PYTHON (default .venv/bin/python if present, else python3).
set -euo pipefail

NPROC=2
DEVICES=1
PORT=""
LOG_DIR=""
COMMAND=pretrain
usage() { sed -n '2,15p' "$0" | sed 's/^# \{0,1\}//'; exit "${1:-2}"; }
while getopts "n:d:p:l:c:h" opt; do
  case "$opt" in
    n) NPROC=$OPTARG ;;
    d) DEVICES=$OPTARG ;;
    p) PORT=$OPTARG ;;
    l) LOG_DIR=$OPTARG ;;
    c) COMMAND=$OPTARG ;;
    h) usage 0 ;;
    *) usage ;;
  esac
done
shift $((OPTIND - 1))
[[ "${1:-}" == "--" ]] && shift
[[ "$NPROC" =~ ^[1-9][0-9]*$ ]] || { echo "error: -n $NPROC must be a positive integer" >&2; exit 2; }
[[ "$DEVICES" =~ ^[1-9][0-9]*$ ]] || { echo "error: -d $DEVICES must be a positive integer" >&2; exit 2; }

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
if [[ -z "${PYTHON:-}" ]]; then
  if [[ -x "$ROOT/.venv/bin/python" ]]; then PYTHON="$ROOT/.venv/bin/python"; else PYTHON=python3; fi
fi
if [[ -z "$PORT" ]]; then
  PORT=$("$PYTHON" -c 'import socket; s = socket.socket(); s.bind(("localhost", 0)); print(s.getsockname()[1])')
fi
LOG_DIR=${LOG_DIR:-"$ROOT/checkpoints/launch_logs/local-$(date +%Y%m%d-%H%M%S)"}
mkdir -p "$LOG_DIR"

pids=()
stop() {  # forward SIGTERM: every process saves at the same step and exits 0
  for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
}
trap stop INT TERM

echo "launching $NPROC processes x $DEVICES CPU devices, coordinator localhost:$PORT, logs in $LOG_DIR" >&2
for ((i = 0; i < NPROC; i++)); do
  XLA_FLAGS="--xla_force_host_platform_device_count=$DEVICES" JAX_PLATFORMS=cpu PYTHONUNBUFFERED=1 \
    "$PYTHON" -m aura.build "$COMMAND" "$@" --init_distributed --coordinator "localhost:$PORT" \
    --process_count "$NPROC" --process_index "$i" >"$LOG_DIR/process_$i.log" 2>&1 &
  pids+=($!)
done

# Show process 0's output as it comes (it is the only one that prints).
tail -n +1 -f "$LOG_DIR/process_0.log" --pid "${pids[0]}" 2>/dev/null | grep -v '^\[Gloo\]' &
tailer=$!

status=0
for i in "${!pids[@]}"; do
  while true; do
    rc=0
    wait "${pids[$i]}" || rc=$?
    # A trapped signal interrupts `wait` (status > 128) while the process is still saving.
    if ((rc > 128)) && kill -0 "${pids[$i]}" 2>/dev/null; then continue; fi
    break
  done
  if ((rc != 0)); then
    echo "process $i exited with status $rc (log: $LOG_DIR/process_$i.log)" >&2
    ((status == 0)) && status=$rc
  fi
done
wait "$tailer" 2>/dev/null || true
exit "$status"
