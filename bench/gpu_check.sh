#!/usr/bin/env bash
# The GPU check, in one go, on a bare GPU machine (no network). From the repository root:
#
#     make gpu-wheels                 # here, beforehand: the wheels the GPU machine lacks -> .whl/
#     OUT=/tmp/gpu bash bench/gpu_check.sh   # there: the CUDA tests, then bench/embed.py on CUDA
#
# It expects python3 with torch (CUDA), numpy, scipy, numba, h5py, pyarrow, pytest there, and
# installs the carried wheels (anndata and what it needs, pandas < 3, the reference uce-model)
# into a scratch folder. Results go to $OUT: gpu_check.log, test_cuda.xml, bench_embed_cuda.json.
# Budget: under 8 minutes (tests 4, benchmark 3).
set -uo pipefail
OUT=${OUT:-/tmp/uceindex-gpu-check}
WHEELS=${WHEELS:-.whl}
PY=${PYTHON:-python3}
SITE=${SITE:-/tmp/uceindex-gpu-site}
mkdir -p "$OUT"
exec > >(tee "$OUT/gpu_check.log") 2>&1

echo "== $(date -u +%FT%TZ) $(hostname)"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv || true
if ! ls "$WHEELS"/*.whl >/dev/null 2>&1; then
  echo "no wheels in $WHEELS: run 'make gpu-wheels' before sending the tree"; exit 2
fi
"$PY" -m pip install -q --no-index --no-deps --target "$SITE" "$WHEELS"/*.whl || exit 2
export PYTHONPATH="$SITE:$PWD" PYTHONUNBUFFERED=1
"$PY" -c "import torch, anndata, pandas; print('torch', torch.__version__, 'cuda', torch.version.cuda, (torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'NO CUDA DEVICE'), '| anndata', anndata.__version__, '| pandas', pandas.__version__)" || exit 2

status=0
echo "== tests/test_cuda.py"
timeout 200 "$PY" -m pytest tests/test_cuda.py -v -p no:cacheprovider -o addopts="" \
  --junitxml "$OUT/test_cuda.xml" || status=1
echo "== bench/embed.py --device cuda"
timeout 300 "$PY" bench/embed.py --device cuda --gpu-only --json "$OUT/bench_embed_cuda.json" || status=1
echo "== done (status $status)"
exit $status
