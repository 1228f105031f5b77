#!/usr/bin/env bash
# Pretrain AURA on a Cloud TPU v4-32 slice (16 chips = 32 TensorCores, 4 TPU VM hosts):
# create the TPU VM or reuse it, copy this checkout to every worker, install, run the same
# command on all workers at once (--worker=all), and collect each worker's log.
#
#   TPU_NAME=aura-v4-32 ZONE=us-central2-b PROJECT=my-gcp-project \
#   JSONL=data/instruct.jsonl SPM=tok/spiece.model CKPT_OUT=/mnt/shared/aura/lm \
#   launch/tpu_v4_32.sh [extra pretrain flags, e.g. --steps 20000 --mesh data=-1]
#
# JSONL and SPM are paths inside this checkout (they are copied with it) or paths that exist on
# every worker. CKPT_OUT must be one directory that all four hosts see (a gcsfuse mount of a GCS
# bucket or a Filestore/NFS mount, set up by MOUNT_CMD below): orbax writes every host's shards
# there. Rerunning the script resumes from CKPT_OUT (the VM is reused, the code re-copied). A
# preempted (spot) VM gets SIGTERM; every host then saves the current step and exits 0.
#
# Environment (defaults): TPU_NAME (aura-v4-32), ZONE (us-central2-b), PROJECT (gcloud's),
#   ACCELERATOR (v4-32), VERSION (tpu-ubuntu2204-base), SPOT (empty; 1 = --spot),
#   PRESET (configs/pretrain.py:default), REMOTE_DIR (aura), MOUNT_CMD (empty: none),
#   JAX_SPEC ("jax[tpu]>=0.11,<0.13"), LOG_DIR (checkpoints/launch_logs/<name>-<time>),
#   DRY_RUN (empty; 1 = print the gcloud commands instead of running them).
set -euo pipefail

TPU_NAME=${TPU_NAME:-aura-v4-32}
ZONE=${ZONE:-us-central2-b}
ACCELERATOR=${ACCELERATOR:-v4-32}
VERSION=${VERSION:-tpu-ubuntu2204-base}
PRESET=${PRESET:-configs/pretrain.py:default}
REMOTE_DIR=${REMOTE_DIR:-aura}
JAX_SPEC=${JAX_SPEC:-"jax[tpu]>=0.11,<0.13"}
MOUNT_CMD=${MOUNT_CMD:-}
: "${JSONL:?set JSONL to the instruction JSONL (a path in this checkout or on every worker)}"
: "${SPM:?set SPM to the SentencePiece model (a path in this checkout or on every worker)}"
: "${CKPT_OUT:?set CKPT_OUT to a directory every host shares (gcsfuse or NFS mount)}"

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
STAMP=$(date +%Y%m%d-%H%M%S)
LOG_DIR=${LOG_DIR:-"$ROOT/checkpoints/launch_logs/$TPU_NAME-$STAMP"}
REMOTE_LOG="aura_logs/$STAMP.log"

run() {  # prints the command; runs it unless DRY_RUN=1
  { printf '+'; printf ' %q' "$@"; echo; } >&2
  if [[ "${DRY_RUN:-}" != 1 ]]; then "$@"; fi
}
tpu() { run gcloud compute tpus tpu-vm "$@" --zone "$ZONE" ${PROJECT:+--project "$PROJECT"}; }

# 1. Create the slice, or reuse it when it exists (a rerun resumes training).
if [[ "${DRY_RUN:-}" != 1 ]] && gcloud compute tpus tpu-vm describe "$TPU_NAME" --zone "$ZONE" \
  ${PROJECT:+--project "$PROJECT"} >/dev/null 2>&1; then
  echo "reusing TPU VM $TPU_NAME in $ZONE" >&2
else
  tpu create "$TPU_NAME" --accelerator-type "$ACCELERATOR" --version "$VERSION" \
    ${SPOT:+--spot}
fi

# 2. Copy this checkout (without virtualenvs, checkpoints, git history) to every worker.
ARCHIVE="${TMPDIR:-/tmp}/aura-$STAMP.tgz"
run tar -C "$ROOT" -czf "$ARCHIVE" --exclude=.venv --exclude=.git --exclude=checkpoints \
  --exclude=__pycache__ --exclude=.pytest_cache .
tpu scp "$ARCHIVE" "$TPU_NAME:~/aura.tgz" --worker=all
tpu ssh "$TPU_NAME" --worker=all --command \
  "mkdir -p ~/$REMOTE_DIR ~/aura_logs && tar -xzf ~/aura.tgz -C ~/$REMOTE_DIR"

# 3. Install: Python 3.12 and the package through uv (the VM image ships an older Python).
tpu ssh "$TPU_NAME" --worker=all --command "set -e; cd ~/$REMOTE_DIR; \
  command -v uv >/dev/null || curl -LsSf https://astral.sh/uv/install.sh | sh; \
  export PATH=\$HOME/.local/bin:\$PATH; \
  [ -x .venv/bin/python ] || uv venv -q -p 3.12 .venv; \
  uv pip install -q -p .venv/bin/python -e . '$JAX_SPEC' \
    --find-links https://storage.googleapis.com/jax-releases/libtpu_releases.html; \
  ${MOUNT_CMD:-true}"

# 4. The same command on all four hosts. --init_distributed alone: JAX finds the coordinator,
#    the process count (4) and each host's index from the TPU metadata. Only process 0 prints.
EXTRA=$(printf '%q ' "$@")
CMD="cd ~/$REMOTE_DIR && .venv/bin/python -m aura.build pretrain --init_distributed \
  --config $PRESET --jsonl $JSONL --spm_model $SPM --ckpt_out $CKPT_OUT $EXTRA"
status=0
tpu ssh "$TPU_NAME" --worker=all --command "$CMD 2>&1 | tee -a ~/$REMOTE_LOG; \
  exit \${PIPESTATUS[0]}" || status=$?

# 5. Collect every worker's log (metrics.jsonl and TensorBoard events are in CKPT_OUT).
for w in 0 1 2 3; do
  run mkdir -p "$LOG_DIR/worker_$w"
  tpu scp "$TPU_NAME:~/$REMOTE_LOG" "$LOG_DIR/worker_$w/" --worker="$w" || true
done
echo "logs in $LOG_DIR; exit status $status" >&2
exit "$status"
