"""V2T (LaPIG) against pix2pix with the same wall-clock training budget on RoadScene train, scored on its test split.

    python benchmarks/quality/run.py ../shared/data/roadscene runs/quality [--preset tiny]

V2T's budget is what its preset takes: autoencoder + UNet training, timed. pix2pix then gets the same number of
seconds: a 50-step calibration run measures its startup and seconds per step, and its step count is set so that a
full run (with its complete learning-rate schedule) lasts as long. Both models are evaluated with
`thermosynth evaluate` on the test split; results.json and RESULTS.md are written into the run folder, to be copied
here with the grid (grid.py: visible | real | V2T | pix2pix).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from grid import comparison_grid

from thermosynth.environment import describe


def run(*args: str) -> float:
    """Run a thermosynth command; return its wall-clock seconds."""
    command = [sys.executable, "-m", "thermosynth.cli", *args]
    print("$ thermosynth " + " ".join(args), flush=True)
    start = time.perf_counter()
    subprocess.run(command, check=True)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("data")
    parser.add_argument("out")
    parser.add_argument("--preset", default="tiny")
    args = parser.parse_args()
    out = Path(args.out)
    if (out / "results.json").exists():
        raise SystemExit(f"{out}/results.json exists: use a new folder so that every time is measured afresh")
    common = ["--data", args.data, "--split", "train", "--preset", args.preset]

    times = {}
    times["autoencoder"] = run("train", "autoencoder", *common, "--out", str(out / "autoencoder"))
    times["v2t"] = run("train", "v2t", *common, "--out", str(out / "v2t"),
                       "--autoencoder", str(out / "autoencoder" / "autoencoder"))
    budget = times["autoencoder"] + times["v2t"]

    calibration_steps = 50
    calibration = run("train", "pix2pix", *common, "--out", str(out / "pix2pix-calibration"),
                      "--steps", str(calibration_steps))
    lines = [json.loads(x) for x in (out / "pix2pix-calibration" / "metrics.jsonl").read_text().splitlines()]
    rates = [x["images_per_s"] for x in lines if "images_per_s" in x][1:]  # the first window includes warm-up
    config = json.loads((out / "pix2pix-calibration" / "config.json").read_text())
    seconds_per_step = config["batch_size"] / (sum(rates) / len(rates))
    startup = max(0.0, calibration - calibration_steps * seconds_per_step)
    pix2pix_steps = int((budget - startup) / seconds_per_step)
    shutil.rmtree(out / "pix2pix-calibration")
    times["pix2pix"] = run("train", "pix2pix", *common, "--out", str(out / "pix2pix"), "--steps", str(pix2pix_steps))

    for name in ("v2t", "pix2pix"):
        times[f"evaluate_{name}"] = run("evaluate", args.data, "--split", "test", "--model",
                                        str(out / name / "pipeline"), "--out", str(out / f"eval-{name}"))
    reports = {name: json.loads((out / f"eval-{name}" / "report.json").read_text()) for name in ("v2t", "pix2pix")}
    results = {
        "data": args.data, "preset": args.preset, "times_s": times,
        "budget_s": {"v2t": budget, "pix2pix": times["pix2pix"]},
        "pix2pix": {"steps": pix2pix_steps, "seconds_per_step": seconds_per_step, "startup_s": startup},
        "machine": {**describe(), "commands_threads": os.environ.get("OMP_NUM_THREADS", "torch default")},
        "metrics": {name: report["metrics"] for name, report in reports.items()},
    }
    (out / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    comparison_grid(args.data, out, out / "grid.jpg")
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
