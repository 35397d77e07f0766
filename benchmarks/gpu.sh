#!/usr/bin/env bash
# The GPU figures of docs/performance.md, in one call on a GPU machine:
#   bash benchmarks/gpu.sh   (from the repository root, with .whl and .gpu beside it: see below)
# The machine has python3 + torch but neither optuna nor the internet: .whl holds the wheels
# (optuna, alembic, colorlog, sqlalchemy, mako, optuna-dashboard, bottle, downloaded here with
# pip download --platform manylinux... --python-version 3.12) and .gpu/MNIST/raw the four MNIST
# files gzipped. Everything written goes to $OUT.
set -uo pipefail
OUT=${OUT:-/tmp/gpu-out}
mkdir -p "$OUT"
exec > >(tee "$OUT/gpu.log") 2>&1
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site .whl/*.whl || exit 1
mkdir -p /tmp/src && cp -r nas /tmp/src/ && cp -r search_spaces /tmp/src/nas/spaces  # the layout an install makes
touch /tmp/src/nas/spaces/__init__.py
export PYTHONPATH="/tmp/site:/tmp/src" NAS_DATA_DIR=/tmp/data PYTHONUNBUFFERED=1
mkdir -p /tmp/data/MNIST/raw
for f in .gpu/MNIST/raw/*.gz; do gunzip -c "$f" > "/tmp/data/MNIST/raw/$(basename "$f" .gz)"; done
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
nproc
step() { echo "=== $(date +%T) $*"; }
want() { [[ " ${STEPS:-1 2 3 4 5} " == *" $1 "* ]]; }

want 1 && step "1. full baseline-6 replay, each loop variant (benchmarks/gpu_replay.py)"
for v in ${VARIANTS:-0 1}; do  # 2 and 3, the channels_last variants: docs/performance.md
  want 1 && timeout 60 python3 benchmarks/gpu_replay.py baseline-6 --variant "$v" ${EPOCHS:+--epochs "$EPOCHS"}
done
want 1 && [[ ${MODE_A:-1} == 1 ]] && echo "cuDNN heuristics mode A (torch's default):" && TORCH_CUDNN_USE_HEURISTIC_MODE_B=0 \
  timeout 60 python3 benchmarks/gpu_replay.py baseline-6 --variant 0

want 2 && step "2. the ReLU/BatchNorm/Dropout block alone, then where a step's GPU time goes (gpu_batchnorm.py, gpu_profile.py)"
want 2 && timeout 60 python3 benchmarks/gpu_batchnorm.py
for o in ${PROFILES:-'{}' '{"fused":false}'}; do  # each in a process of its own
  want 2 && timeout 60 python3 benchmarks/gpu_profile.py baseline-6 --top 14 --options "$o"
done

want 3 && step "3. the command itself, process start and data loading included"
want 3 && time (cd /tmp && timeout 60 python3 -m nas replay baseline-6 --device cuda --results-dir /tmp/res)

want 4 && step "4. nas bench on the GPU"
want 4 && (cd /tmp && timeout 150 python3 -m nas bench --device cuda --steps 1000 --repeats 2 --jobs 8 --results-dir /tmp/res)
cp /tmp/res/bench/*.csv "$OUT/" 2>/dev/null

want 5 && step "5. the full search: --budget 8000 --trials ${TRIALS:-200} --jobs 8 (confirmation: top 3 x 3 seeds)"
if want 5; then
SECONDS=0
cd /tmp && timeout "${SEARCH_SECONDS:-270}" python3 -m nas search --budget 8000 --trials "${TRIALS:-200}" --jobs 8 --seeds 3 --device cuda \
  --results-dir /tmp/res
echo "search exit $? after $SECONDS s"
cp /tmp/res/nas.db "$OUT/gpu-search.db"
fi
# 6: not in the default steps (STEPS="6"): the whole frontier, which the CPU runs only in part
want 6 && step "6. nas frontier --budgets ${BUDGETS:-5000,6000,8000} --trials ${TRIALS:-60} --jobs 8"
if want 6; then
SECONDS=0
cd /tmp && timeout "${FRONTIER_SECONDS:-540}" python3 -m nas frontier --budgets "${BUDGETS:-5000,6000,8000}" \
  --trials "${TRIALS:-60}" --jobs 8 --device cuda --results-dir /tmp/res
echo "frontier exit $? after $SECONDS s"
cp /tmp/res/nas.db "$OUT/frontier.db" && cp -r /tmp/res/frontier "$OUT/" 2>/dev/null
fi
step done
