#!/usr/bin/env bash
# The prepared GPU check, as one command on the device machine (README "GPU check"):
#   here: python benchmarks/device_check.py --prepare-data
#   run:  bash benchmarks/device_check.sh      carry: [".device-data", ".pylib"]
# Installs hardenctl without network (the machine has torch, timm and the rest; pyautoattack travels in .pylib/),
# runs the CUDA-marked tests, then benchmarks/device_check.py; everything it measures lands in $OUT.
set -uo pipefail
OUT=${OUT:-.}
export PYTHONUNBUFFERED=1
started=$(date +%s)
if [ -d .pylib ]; then export PYTHONPATH="$PWD/.pylib${PYTHONPATH:+:$PYTHONPATH}"; fi
python3 -m pip install -q --no-deps --no-build-isolation -e . 2>&1 | tail -3
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>&1 | tee "$OUT/nvidia_smi.txt"
timeout 150 python3 -m pytest -m cuda -q -p no:cacheprovider 2>&1 | tee "$OUT/pytest_cuda.log" | tail -15
echo "setup + cuda tests: $(( $(date +%s) - started )) s"
python3 benchmarks/device_check.py --out "$OUT/device_check.json" --budget "${BUDGET:-330}" 2>&1 | tee "$OUT/device_check.log"
echo "total: $(( $(date +%s) - started )) s"
