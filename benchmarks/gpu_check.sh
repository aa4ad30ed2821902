#!/usr/bin/env bash
# The checks that need a GPU, as one prepared script for a lent GPU machine (CUDA, CuPy and
# python3 with torch already there; nothing can be fetched there).
#
#   bash benchmarks/gpu_check.sh tests    the CUDA/CuPy tests (tests/test_cuda_kernels.py and
#                                         SpikingJelly 0.0.0.0.14's own CuPy neurons against the
#                                         twin), then benchmarks/gpu_step.py
#   bash benchmarks/gpu_check.sh recipe   the quick MNIST-FC recipe end to end with --device cuda
#
# Before sending it, here: put the wheels the machine lacks into .whl/ and MNIST into .gpudata/
# (both ignored by git, carried by the device tool):
#   python -m pip download --no-deps --only-binary=:all: --python-version 3.12 -d .whl \
#       spikingjelly==0.0.0.0.14 snntorch==1.0.0
#   mkdir -p .gpudata/MNIST/raw && for f in data/MNIST/raw/*; do gzip -c $f > .gpudata/MNIST/raw/${f##*/}.gz; done
# Results go to $OUT (the device tool's folder; /tmp/gpu-check elsewhere).
set -uo pipefail
export PYTHONUNBUFFERED=1
OUT=${OUT:-/tmp/gpu-check}
mkdir -p "$OUT"
phase=${1:-tests}

# This package and the carried wheels into one folder, the machine's own torch/CuPy left alone.
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
python3 -m pip install -q --no-index --no-deps --no-build-isolation --no-compile --upgrade --target /tmp/site . || exit 1
export PYTHONPATH=/tmp/site
{
    nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
    python3 -c "import torch, cupy, spikingjelly; print('torch', torch.__version__, 'cuda', torch.version.cuda, 'cupy', cupy.__version__)"
    nproc
} 2>&1 | tee "$OUT/machine.txt"

case $phase in
tests)
    # -rs lists every skip: on this machine none of the CUDA/CuPy tests may be skipped.
    timeout 240 python3 -m pytest -q -rs -p no:cacheprovider tests/test_cuda_kernels.py \
        tests/test_adapters_spikingjelly.py -k "cuda or gpu or cupy or nvcc or nvrtc or kernel" 2>&1 | tee "$OUT/pytest.log"
    [ "${GPU_STEP:-1}" = 0 ] || timeout 200 python3 benchmarks/gpu_step.py --repeats 20 2>&1 | tee "$OUT/gpu_step.log"
    ;;
recipe)
    # the .gz files are unpacked beside themselves on first use: send only the .gz files
    start=$(date +%s)
    timeout "${RECIPE_TIMEOUT:-420}" python3 -m snn_robust recipe mnist-fc --profile quick --device cuda \
        --data-root "${GPU_DATA:-.gpudata}" --out /tmp/mnist-fc-quick-cuda 2>&1 | tee "$OUT/recipe.log"
    echo "wall: $(( $(date +%s) - start )) s" | tee -a "$OUT/recipe.log"
    cp /tmp/mnist-fc-quick-cuda/results.md /tmp/mnist-fc-quick-cuda/results.json "$OUT/" 2>/dev/null
    ;;
*)
    echo "usage: bash benchmarks/gpu_check.sh tests|recipe" >&2
    exit 2
    ;;
esac
