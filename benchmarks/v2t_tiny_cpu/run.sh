#!/usr/bin/env bash
# The foundation issue's check: `tiny` autoencoder + V2T on RoadScene train on this machine's CPU, then translate
# the 45 test pairs and score them (SSIM / PSNR / MAE on the thermal channel, 0-255). Writes grid.jpg here.
#   bash benchmarks/v2t_tiny_cpu/run.sh [ROADSCENE_ROOT] [RUN_FOLDER]
set -euo pipefail
data=${1:-../shared/data/roadscene}
out=${2:-runs/v2t-tiny-cpu}
here=$(dirname "$0")
TIMEFORMAT="%R s"
echo "autoencoder:"; time thermosynth train autoencoder --preset tiny --data "$data" --out "$out/ae" 2>"$out.ae.log"
echo "v2t:"; time thermosynth train v2t --preset tiny --data "$data" --autoencoder "$out/ae/autoencoder" \
  --out "$out/v2t" 2>"$out.v2t.log"
echo "translate:"; time thermosynth translate "$data" --split test --model "$out/v2t/pipeline" \
  --out "$out/translated" 2>"$out.translate.log"
ls "$out"/translated/*.png | wc -l
python "$here/score.py" "$data" "$out/translated" "$here/grid.jpg"
