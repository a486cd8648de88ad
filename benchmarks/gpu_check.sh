#!/usr/bin/env bash
# The GPU check, one script: library and GPU versions, the CUDA-marked tests, the precisions side by side (fp32 --
# TF32 from compute capability 8.0 --, bf16 and fp16 autocast: 3-epoch eager runs of both nets, in the order A B C
# for one net and C B A for the other), then 10-epoch multi- and single-stage runs on CIFAR-10, eager and --compile,
# in the precision run.py picks for this GPU, timed (compile apart), and a study of 4 runs in one process against
# the same dealt to 4 processes on the GPU (benchmarks/members.py).
#
#   bash benchmarks/gpu_check.sh DATA_DIR [OUT_DIR]
#
# DATA_DIR holds cifar-10-batches-py/. Works with the torch already on a GPU machine; pytorch-ignite must be
# importable (PYTHONPATH may point at a folder it was installed into from a local wheel). Results: OUT_DIR
# (default benchmarks/results/gpu) gets versions.txt, cuda-tests.log, precisions.log, precisions.json, timing.log and
# gpu_check.json, members.log and members.json. PRECISION_EPOCHS (default 3) sets the length of the precision runs,
# MEMBERS_PAIRS (default 2) how many times each way the study is timed.
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
python benchmarks/end_to_end.py --data-dir "$DATA" --modes eager --precisions fp32 bf16 fp16 \
  --epochs "${PRECISION_EPOCHS:-3}" --json "$OUT/precisions.json" 2>&1 | tee "$OUT/precisions.log" || status=1
python benchmarks/end_to_end.py --data-dir "$DATA" --json "$OUT/gpu_check.json" 2>&1 | tee "$OUT/timing.log" || status=1
# A 2-net x 2-seed study: one process after another against 4 processes sharing the GPU (--parallel members).
python benchmarks/members.py --data-dir "$DATA" --device cuda --amp auto --nproc 4 --sequential-threads 1 \
  --pairs "${MEMBERS_PAIRS:-2}" --json "$OUT/members.json" 2>&1 | tee "$OUT/members.log" || status=1
exit $status
