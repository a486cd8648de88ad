#!/usr/bin/env bash
# The GPU check, one script (about 5 minutes on one H100): library and GPU versions, the CUDA-marked
# tests, then 10-epoch multi- and single-stage runs on CIFAR-10, eager and --compile, timed (compile apart).
#
#   bash benchmarks/gpu_check.sh DATA_DIR [OUT_DIR]
#
# DATA_DIR holds cifar-10-batches-py/. Works with the torch already on a GPU machine; pytorch-ignite must be
# importable (PYTHONPATH may point at a folder it was installed into from a local wheel). Results: OUT_DIR
# (default benchmarks/results/gpu) gets versions.txt, cuda-tests.log, timing.log and gpu_check.json.
set -uo pipefail
DATA=$(realpath "${1:?usage: gpu_check.sh DATA_DIR [OUT_DIR]}")
OUT=$(realpath -m "${2:-benchmarks/results/gpu}")
cd "$(dirname "$0")/.."
mkdir -p "$OUT"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
status=0
{
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
  python -c 'import sys, torch, torchvision, ignite; print("python", sys.version.split()[0], "| torch", torch.__version__,
"| cuda", torch.version.cuda, "| cudnn", torch.backends.cudnn.version(), "| torchvision", torchvision.__version__,
"| pytorch-ignite", ignite.__version__, "|", torch.cuda.get_device_name(0))'
} 2>&1 | tee "$OUT/versions.txt"
# One process, without setup.cfg's pytest-xdist workers: the CUDA tests share one GPU, and a GPU machine's Python
# may lack pytest-xdist.
python -m pytest -o addopts="-ra --strict-markers" -m cuda tests/test_cuda.py -q -p no:cacheprovider 2>&1 | tee "$OUT/cuda-tests.log" || status=1
python benchmarks/end_to_end.py --data-dir "$DATA" --json "$OUT/gpu_check.json" 2>&1 | tee "$OUT/timing.log" || status=1
exit $status
