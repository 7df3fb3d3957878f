"""How often a 2-process gloo run aborts at its end (SIGABRT, "terminate called without an active exception") after
all its work is done, by how it ends: a plain all-reduce, a two-layer FSDP2 (fully_shard) step left to the
interpreter's teardown, and the same step ended as thermosynth's commands end (distributed.py's close_process_group,
then exit_if_gloo_outlives_its_group). Rank 0 waits half a second before ending, as it does while writing an export
that rank 1 has no part in. Prints a table and appends it to results.jsonl with the machine, versions and command.

    python benchmarks/teardown/gloo_exit.py --runs 40
"""

from __future__ import annotations

import argparse
import datetime
import json
import subprocess
import sys
import tempfile
from pathlib import Path

from thermosynth.environment import describe

RESULTS = Path(__file__).with_name("results.jsonl")
ENDINGS = ("all-reduce", "fsdp", "fsdp, thermosynth's end")

RANK = """
import sys, time
import torch, torch.distributed as dist
from thermosynth.distributed import close_process_group, exit_if_gloo_outlives_its_group
rank, store, ending = int(sys.argv[1]), sys.argv[2], sys.argv[3]
dist.init_process_group("gloo", init_method="file://" + store, rank=rank, world_size=2)
if ending == "all-reduce":
    dist.all_reduce(torch.ones(3))
else:
    from torch.distributed.fsdp import fully_shard
    model = torch.nn.Sequential(torch.nn.Linear(8, 8), torch.nn.Linear(8, 2))
    fully_shard(model)
    model(torch.ones(4, 8)).sum().backward()
dist.barrier()
close_process_group()
if rank == 0:
    time.sleep(0.5)
if ending == "fsdp, thermosynth's end":
    exit_if_gloo_outlives_its_group()
"""


def one_run(ending: str, folder: Path) -> list[int]:
    """Both ranks' exit codes (-6: killed by SIGABRT)."""
    store = folder / "store"
    store.unlink(missing_ok=True)
    ranks = [subprocess.Popen([sys.executable, "-c", RANK, str(rank), str(store), ending],
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True) for rank in (0, 1)]
    codes = []
    for process in ranks:
        _, stderr = process.communicate(timeout=300)
        if process.returncode and "terminate called" not in stderr:
            raise RuntimeError(f"{ending}: a rank failed otherwise than by the teardown abort:\n{stderr[-2000:]}")
        codes.append(process.returncode)
    return codes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=40, help="runs of each ending")
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        for ending in ENDINGS:
            aborted = sum(any(one_run(ending, Path(folder))) for _ in range(args.runs))
            rows.append({"ending": ending, "runs": args.runs, "aborted": aborted})
            print(f"{ending:<26} {aborted:>3} of {args.runs} runs aborted", flush=True)
    record = {"date": datetime.date.today().isoformat(), **describe(),
              "command": f"python benchmarks/teardown/gloo_exit.py --runs {args.runs}", "rows": rows}
    with RESULTS.open("a") as results:
        results.write(json.dumps(record) + "\n")


if __name__ == "__main__":
    main()
