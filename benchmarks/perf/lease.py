"""Issue 12's GPU measurements in one lease: this folder's scripts in the order the goals need them, one at a time,
each under its own time limit, until the minutes given run out; every row goes into one results file that comes back.

    # on the device, started with setsid so that it runs on between calls (the autoencoder carried as an ignored
    # folder, the package moved out of the checkout: benchmarks/shipped/RESULTS.md has the layout):
    setsid nohup python3 benchmarks/perf/lease.py .perf --autoencoder .shipped/autoencoder --minutes 10 \
        --text-encoder .shipped/minilm > .perf.log 2>&1 < /dev/null &
    # here, first: the same queue at tiny sizes on the CPU, to test it end to end
    python benchmarks/perf/lease.py /tmp/perf-lease --tiny --minutes 10

Writes OUT/results.jsonl (the scripts' rows), OUT/queue.jsonl (a line per item: exit code, seconds, or why it was
skipped), OUT/logs/ITEM.log. First it makes the V2T pipeline that the sampling questions time: `thermosynth train v2t`
with the `base` preset (the shipped model's architecture) for one step on synthetic scenes, since sampling time does
not depend on the weights and the shipped UNet does not fit into a call beside the autoencoder. Items that need the
text encoder (T2IR) wait until a later call has carried it, or are skipped when the minutes run out first.
`--from ITEM` starts the queue at that item (a later lease goes on where an earlier one stopped).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

from train_throughput import AUTOENCODER, synthetic_data  # this folder's script (on sys.path when run as a script)

HERE = Path(__file__).parent

# (name, seconds it may take, script, arguments): the goals first (SD-1.5-sized MFU at 512 px, `base` V2T training
# against the eager loop, batch-1 and batch-64 translation), then the whole tables, then the ladders, then T2IR.
# {model} is the pipeline made first.
QUEUE = [
    ("train-sd15-512", 150, "train_throughput.py", "--preset sd15 --resolution 512 --batch-size 16 "
     "--mixed-precision bf16 --steps 30 --warmup 5"),
    ("train-sd15-512-compile", 240, "train_throughput.py", "--preset sd15 --resolution 512 --batch-size 16 "
     "--mixed-precision bf16 --steps 30 --warmup 5 --compile"),
    ("train-base-256", 120, "train_throughput.py", "--preset base --resolution 256 --batch-size 32 "
     "--mixed-precision bf16 --steps 50"),
    ("train-base-256-compile", 200, "train_throughput.py", "--preset base --resolution 256 --batch-size 32 "
     "--mixed-precision bf16 --steps 50 --compile"),
    ("sample-20", 120, "sampling.py", "--model {model} --dtype bf16 --batch-sizes 1 64 --steps 20"),
    ("sample-20-graphs", 240, "sampling.py", "--model {model} --dtype bf16 --batch-sizes 1 64 --steps 20 "
     "--compile reduce-overhead"),
    ("sample-table", 180, "sampling.py", "--model {model} --dtype bf16 --batch-sizes 1 16 64 --steps 10 20 50"),
    ("ladder-train-base", 240, "optimisations.py", "training --preset base --resolution 256 --batch-size 32"),
    ("ladder-sample", 300, "optimisations.py", "sampling --model {model} --batch-sizes 1 64 --steps 20"),
    ("ladder-train-sd15", 300, "optimisations.py", "training --preset sd15 --resolution 512 --batch-size 16"),
    ("train-t2ir-base-256", 150, "train_throughput.py", "--task t2ir --preset base --resolution 256 --batch-size 32 "
     "--mixed-precision bf16 --steps 30 --text-encoder {text_encoder}"),
    ("train-t2ir-sd15-512", 200, "train_throughput.py", "--task t2ir --preset sd15 --resolution 512 --batch-size 16 "
     "--mixed-precision bf16 --steps 20 --warmup 5 --text-encoder {text_encoder}"),
]
# The same items at sizes a 2-core CPU runs in seconds: what the test of this script runs.
TINY = {
    "train_throughput.py": "--preset tiny --resolution 32 --batch-size 2 --steps 2 --warmup 1 --device cpu",
    "sampling.py": "--model {model} --resolution 32 --batch-sizes 1 --steps 2 --repeats 1 --device cpu",
    "optimisations.py training": "training --preset tiny --resolution 32 --batch-size 2 --steps 1 --warmup 0 "
                                 "--device cpu",
    "optimisations.py sampling": "sampling --model {model} --resolution 32 --batch-sizes 1 --steps 2 --repeats 1 "
                                 "--device cpu",
}


def pause_for_a_later_call() -> None:
    time.sleep(5)  # the device tool carries a path only at the start of a call


def tiny_arguments(script: str, arguments: str) -> str:
    """The item's arguments at TINY's sizes, keeping its task and text encoder; without --compile, whose wiring
    tests/test_perf_benchmarks.py checks (inductor would take minutes a compile on the CPU)."""
    key = f"{script} {arguments.split()[0]}" if script == "optimisations.py" else script
    task = ["--task", "t2ir"] if "--task t2ir" in arguments else []
    text = ["--text-encoder", "{text_encoder}"] if "{text_encoder}" in arguments else []
    return " ".join([*task, TINY[key], *text])


def make_sampling_pipeline(out: Path, autoencoder: str, tiny: bool) -> Path:
    """One optimizer step of `thermosynth train v2t` on 8 synthetic scenes: the preset's pipeline, exported."""
    data = out / "scenes"
    if not data.is_dir():  # a re-run (--from) keeps the scenes
        synthetic_data(data, "v2t", 8, 32 if tiny else 256)
    run = out / "v2t-pipeline"
    command = [sys.executable, "-m", "thermosynth.cli", "train", "v2t", "--data", str(data), "--preset",
               "tiny" if tiny else "base", "--steps", "1", "--autoencoder", autoencoder, "--out", str(run)]
    with (out / "logs" / "v2t-pipeline.log").open("a") as log:
        subprocess.run(command, check=True, stdout=log, stderr=subprocess.STDOUT)
    return run / "pipeline"


def run_queue(out: Path, autoencoder: str, text_encoder: Path | None, minutes: float, tiny: bool,
              first: str | None) -> list[dict]:
    """Each item in turn until `minutes` run out; returns (and appends to OUT/queue.jsonl) what became of each."""
    deadline = time.monotonic() + minutes * 60
    (out / "logs").mkdir(parents=True, exist_ok=True)
    done = []

    def note(entry: dict) -> None:
        done.append(entry)
        with (out / "queue.jsonl").open("a") as queue:
            queue.write(json.dumps(entry) + "\n")
        print(json.dumps(entry), flush=True)

    started = time.monotonic()
    try:
        model = make_sampling_pipeline(out, autoencoder, tiny)
        note({"item": "v2t-pipeline", "rc": 0, "seconds": round(time.monotonic() - started, 1)})
    except subprocess.CalledProcessError as error:
        model = None
        note({"item": "v2t-pipeline", "rc": error.returncode, "seconds": round(time.monotonic() - started, 1)})
    names = [name for name, *_ in QUEUE]
    for name, limit, script, arguments in QUEUE[names.index(first) if first else 0 :]:
        if tiny:
            arguments = tiny_arguments(script, arguments)
        if "{text_encoder}" in arguments and text_encoder is None:  # the installed MiniLM package, as by default
            arguments = arguments.replace("--text-encoder {text_encoder}", "")
        awaited = "{text_encoder}" in arguments
        while awaited and not text_encoder.is_dir() and time.monotonic() < deadline - 30:
            pause_for_a_later_call()
        left = deadline - time.monotonic()
        if awaited and not text_encoder.is_dir():
            note({"item": name, "skipped": f"the minutes ran out waiting for {text_encoder}"})
            continue
        if left < 30:
            note({"item": name, "skipped": "the minutes ran out"})
            continue
        if "{model}" in arguments and model is None:
            note({"item": name, "skipped": "no pipeline to sample with (logs/v2t-pipeline.log)"})
            continue
        argv = arguments.format(model=model, text_encoder=text_encoder).split()
        command = [sys.executable, str(HERE / script), *argv, "--results", str(out / "results.jsonl")]
        if script == "train_throughput.py" or argv[0] == "training":  # the questions that encode latents
            command += ["--autoencoder", autoencoder]
        started = time.monotonic()
        with (out / "logs" / f"{name}.log").open("w") as log:
            print("$ " + " ".join(command), file=log, flush=True)
            try:
                rc = subprocess.run(command, stdout=log, stderr=subprocess.STDOUT,
                                    timeout=min(limit, left)).returncode
            except subprocess.TimeoutExpired:
                rc = "timed out"
        note({"item": name, "rc": rc, "seconds": round(time.monotonic() - started, 1)})
    (out / "DONE").write_text("ok\n")
    return done


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out", type=Path)
    parser.add_argument("--autoencoder", default=str(AUTOENCODER))
    parser.add_argument("--text-encoder", type=Path, help="MiniLM for the T2IR items (.shipped/minilm)")
    parser.add_argument("--minutes", type=float, default=10.0, help="no item starts with under 30 s of these left")
    parser.add_argument("--tiny", action="store_true", help="the same queue at tiny sizes, on the CPU")
    parser.add_argument("--from", dest="first", choices=[name for name, *_ in QUEUE], help="start at this item")
    args = parser.parse_args(argv)
    run_queue(args.out, args.autoencoder, args.text_encoder, args.minutes, args.tiny, args.first)


if __name__ == "__main__":
    main()
