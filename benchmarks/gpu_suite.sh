#!/usr/bin/env bash
# The prepared GPU run: install the carried peer wheels (offline), then run the whole suite.
#
#   bash benchmarks/gpu_suite.sh [gpu_suite.py options]      # writes $OUT/gpu_suite.{json,md,log}
#
# Wheels: .whl/*.whl (git-ignored; see benchmarks/README.md) go to /tmp/site with pip --no-index;
# without them the peers' rows say "skipped: not installed". Data: gpu_data/cifar10-jpeg.npz
# (benchmarks/gpu_suite_data.py --prepare). Never fails on a missing extra: the suite reports it.
set -u
cd "$(dirname "$0")/.." || exit 2
PY="${PYTHON:-python3}"
OUT="${OUT:-runs/gpu_suite}"
mkdir -p "$OUT"
if compgen -G ".whl/*.whl" > /dev/null; then
    if "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site \
            .whl/*.whl; then
        export PYTHONPATH="/tmp/site${PYTHONPATH:+:$PYTHONPATH}"
        echo "gpu_suite.sh: installed $(ls .whl/*.whl | wc -l) carried wheels into /tmp/site"
    else
        echo "gpu_suite.sh: installing the carried wheels failed; the peers will be skipped"
    fi
else
    echo "gpu_suite.sh: no .whl/ folder; the peers will be skipped unless already installed"
fi
[ -f gpu_data/cifar10-jpeg.npz ] || echo "gpu_suite.sh: no gpu_data/cifar10-jpeg.npz; the accuracy run will be skipped"
command -v nvidia-smi > /dev/null && nvidia-smi --query-gpu=name,driver_version,memory.used,utilization.gpu \
    --format=csv,noheader
export PYTHONUNBUFFERED=1
exec "$PY" benchmarks/gpu_suite.py --out "$OUT" "$@"
