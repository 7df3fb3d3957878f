"""The training loop every task shares: accelerate, EMA, checkpoints, exact resume, validation grids, logs.

A task supplies its model and four functions (draw a batch, compute the loss, validate, export); this module
owns everything about running them. Randomness of step `s` (data, crops, noise, timesteps) comes from a generator
seeded by (seed, rank, step, micro-step), so a resumed run replays exactly what an uninterrupted run would do.
"""

from __future__ import annotations

import copy
import json
import logging
import math
import os
import shutil
import time
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from accelerate import Accelerator
from accelerate.tracking import GeneralTracker
from accelerate.utils import DistributedType
from diffusers.training_utils import EMAModel
from tqdm.auto import tqdm
from transformers import get_scheduler

from thermosynth.distributed import uses_cpu
from thermosynth.environment import describe
from thermosynth.resumable import RESUME_HINT, differences
from thermosynth.training.checkpoint import (
    checkpoint_dirs,
    checkpoint_state,
    load_checkpoint,
    save_checkpoint,
    trained_parameters,
)
from thermosynth.training.config import TrainConfig, load_config
from thermosynth.training.sharding import shard_like, shard_optimizer_state, whole_state

logger = logging.getLogger(__name__)

# Fields that may change between a run and its resumption: a moved folder, training longer, or bookkeeping.
RESUMABLE_CHANGES = {"output_dir", "steps", "time_budget", "checkpoint_every", "validate_every", "log_every",
                     "keep_checkpoints"}


@dataclass
class TrainingTask:
    config: TrainConfig
    model: torch.nn.Module  # the trained part (frozen parts live inside the functions below)
    draw_batch: Callable[[torch.Generator], dict[str, torch.Tensor]]
    compute_loss: Callable[[torch.nn.Module, dict[str, torch.Tensor], torch.Generator], tuple[torch.Tensor, dict]]
    validate: Callable[[torch.nn.Module, Path], dict[str, float]]  # writes a grid to the path, returns metrics
    export: Callable[[torch.nn.Module, Path], None]  # writes the finished model (EMA weights) into a folder
    export_name: str  # the folder inside the run that `export` fills


def step_generator(seed: int, rank: int, step: int, micro: int = 0) -> torch.Generator:
    value = int(np.random.SeedSequence([seed, rank, step, micro]).generate_state(1, dtype=np.uint64)[0])
    return torch.Generator().manual_seed(value)


@contextmanager
def global_rng_from(generator: torch.Generator, device: torch.device):
    """Run code whose randomness comes from torch's global RNG (nn.Dropout) on a state drawn from the step's
    generator, so that it replays on resume; the global state outside is left as it was."""
    devices = [device.index or 0] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(int(torch.randint(2**62, (1,), generator=generator)))
        yield


MIN_LR_RATE = 0.1  # the cosine ends at 10% of the peak learning rate


def learning_rate_schedule(optimizer: torch.optim.Optimizer, config: TrainConfig) -> Callable[[int, float], None]:
    """transformers' warm-up + cosine schedule ("cosine_with_min_lr"), evaluated where the run stands: returns
    `apply(step, elapsed_s)`, which sets the learning rate of update `step` (0-based) in the optimizer.

    The position is the step, except that the warm-up counts the update being made (the first trains at
    peak / warmup_steps, not at 0), and a budgeted run, whose length in steps is unknown, is as far along as the
    larger of its steps and its clock. Stateless, so a resumed run needs no scheduler state."""
    schedule = get_scheduler("cosine_with_min_lr", optimizer, num_warmup_steps=config.warmup_steps,
                             num_training_steps=config.steps, scheduler_specific_kwargs={"min_lr_rate": MIN_LR_RATE})
    steps, warmup = config.steps, config.warmup_steps

    def apply(step: int, elapsed_s: float = 0.0) -> None:
        position = step + 1 if step < warmup else step
        if config.time_budget is not None and step >= warmup:
            position = max(position, warmup + (steps - warmup) * elapsed_s / (60 * config.time_budget))
        for group, peak, factor in zip(optimizer.param_groups, schedule.base_lrs, schedule.lr_lambdas, strict=True):
            group["lr"] = peak * factor(min(position, steps))

    return apply


def adamw_class(config: TrainConfig) -> type[torch.optim.Optimizer]:
    """torch's AdamW, or bitsandbytes' AdamW8bit for `adam_8bit` (its state quantised blockwise to 8 bits)."""
    if not config.adam_8bit:
        return torch.optim.AdamW
    try:
        import bitsandbytes
    except ImportError as error:
        raise ImportError(f"--adam-8bit needs bitsandbytes, which did not import ({error}). Install it with "
                          "pip install 'thermosynth[adam8bit]', or train without --adam-8bit.") from error
    return bitsandbytes.optim.AdamW8bit


def budget_spent(config: TrainConfig, elapsed_s: float) -> bool:
    return config.time_budget is not None and elapsed_s >= 60 * config.time_budget


class TrainingProgress:
    """The bar a training run shows: steps, or for a budgeted run the budget's seconds with the step beside them (its
    length in steps is unknown, so a step bar would count towards the step cap and show an ETA of days)."""

    def __init__(self, config: TrainConfig, start: int, elapsed_s: float, disable: bool):
        self.budgeted = config.time_budget is not None
        if self.budgeted:
            total = round(60 * config.time_budget)
            self.bar = tqdm(total=total, initial=min(round(elapsed_s), total), unit="s", disable=disable,
                            desc=f"train {config.task} ({config.time_budget:g} min budget)")
        else:
            self.bar = tqdm(total=config.steps, initial=start, desc=f"train {config.task}", disable=disable)
        self.postfix = {"step": start} if self.budgeted else {}

    def advance(self, done: int, elapsed_s: float) -> None:
        if self.budgeted:
            self.postfix["step"] = done
            self.bar.update(max(0, min(round(elapsed_s), self.bar.total) - self.bar.n))
            self.bar.set_postfix(self.postfix)
        else:
            self.bar.update(1)

    def show(self, **values) -> None:
        self.postfix.update(values)
        self.bar.set_postfix(self.postfix)

    def close(self) -> None:
        self.bar.close()


def prepare_run_dir(config: TrainConfig) -> Path:
    """Create the run folder and write the resolved config, or check that it matches the run being resumed."""
    run_dir = Path(config.output_dir)
    saved = run_dir / "config.json"
    if saved.is_file():
        previous = load_config(saved).to_dict()
        current = config.to_dict()
        changed = differences(previous, current, RESUMABLE_CHANGES)
        if changed:
            raise ValueError(f"{run_dir} holds a run with a different config ({changed}). {RESUME_HINT}")
    run_dir.mkdir(parents=True, exist_ok=True)
    tmp = run_dir / f".config.json.{os.getpid()}.tmp"  # processes of one run may write it at once
    config.save(tmp)
    os.replace(tmp, saved)
    return run_dir


class JsonLinesTracker(GeneralTracker):
    """An accelerate tracker that appends one JSON object a line to metrics.jsonl.

    On resume, lines written after the restored checkpoint are dropped, so each step is logged once (TensorBoard
    does the same through its `purge_step`)."""

    name = "jsonl"
    requires_logging_directory = False

    def __init__(self, path: Path, resume_step: int):
        super().__init__()
        self.path, self.resume_step = path, resume_step

    def start(self) -> None:
        if self.path.is_file():
            kept = [line for line in self.path.read_text().splitlines() if self._step_of(line) <= self.resume_step]
            self.path.write_text("".join(line + "\n" for line in kept))

    @property
    def tracker(self) -> Path:
        return self.path

    @staticmethod
    def _step_of(line: str) -> float:
        try:
            return json.loads(line)["step"]
        except (json.JSONDecodeError, KeyError, TypeError):  # a line cut short by a crash
            return math.inf

    def log(self, values: dict, step: int | None = None, **kwargs) -> None:
        with self.path.open("a") as f:
            f.write(json.dumps({"step": step, **values}) + "\n")


class _ModelWithLoss(torch.nn.Module):
    """The trained model with its task's loss as forward(). accelerate wraps this module (DDP), so the loss
    always runs through the wrapper's forward, which is what synchronises gradients, however the loss reaches into
    the model (`vae.encode`, `model.generator`)."""

    def __init__(self, model: torch.nn.Module, compute_loss: Callable):
        super().__init__()
        self.model = model
        self.compute_loss = compute_loss

    def forward(self, batch: dict[str, torch.Tensor], generator: torch.Generator):
        return self.compute_loss(self.model, batch, generator)


class EmaWeights:
    """Runs code on the trained model holding its EMA weights, on the main process.

    Unsharded, the EMA is copied into the model and taken out again. Under FSDP no process holds a whole model, and
    the sharded model only runs with every process in step, so the shards are gathered (every process calls `run`)
    into a whole copy of the model that the main process keeps on the CPU for this."""

    def __init__(self, model: torch.nn.Module, ema: EMAModel, accelerator: Accelerator):
        self.model, self.ema, self.accelerator = model, ema, accelerator
        self.sharded = accelerator.distributed_type == DistributedType.FSDP
        self.whole_copy = copy.deepcopy(model) if self.sharded and accelerator.is_main_process else None

    def run(self, fn: Callable[[torch.nn.Module], object]):
        """fn(model with the EMA weights) on the main process; its result there, None elsewhere. A compiled UNet
        runs eagerly here: a validation grid is too little work to pay for compiling sampling's shapes."""
        with torch.compiler.set_stance("force_eager"):
            return self._run(fn)

    def _run(self, fn: Callable[[torch.nn.Module], object]):
        if self.sharded:
            names = trained_parameters(self.model)
            state = whole_state(self.model, dict(zip(names, self.ema.shadow_params, strict=True)))
            if self.whole_copy is None:
                return None
            self.whole_copy.load_state_dict(state)
            self.whole_copy.to(self.accelerator.device).eval()
            try:
                with torch.no_grad():
                    return fn(self.whole_copy)
            finally:
                self.whole_copy.to("cpu")
        if not self.accelerator.is_main_process:
            return None
        parameters = trained_parameters(self.model).values()
        self.ema.store(parameters)
        self.ema.copy_to(parameters)
        training = self.model.training
        self.model.eval()
        try:
            with torch.no_grad():
                return fn(self.model)
        finally:
            self.ema.restore(parameters)
            self.model.train(training)


def _export(task: TrainingTask, ema_weights: EmaWeights, run_dir: Path) -> Path:
    """Write the EMA weights into <run>/<export_name> atomically (every process calls it; the main one writes)."""
    final = run_dir / task.export_name
    tmp = run_dir / f".{task.export_name}.tmp"
    main = ema_weights.accelerator.is_main_process
    if main:
        shutil.rmtree(tmp, ignore_errors=True)
        logger.info("exporting the EMA weights to %s", final)
    ema_weights.run(lambda ema_model: task.export(ema_model, tmp))
    if main:
        shutil.rmtree(final, ignore_errors=True)
        os.replace(tmp, final)
        logger.info("exported %s", final)
    return final


def _agreed_elapsed(accelerator: Accelerator, elapsed: float) -> float:
    """The main process's clock, so that every process stops a budgeted run at the same step."""
    if accelerator.num_processes == 1:
        return elapsed
    from accelerate.utils import broadcast

    return float(broadcast(torch.tensor([elapsed], device=accelerator.device)).item())


def train_with(config: TrainConfig, build_task: Callable[[TrainConfig], TrainingTask]) -> Path:
    """Check the run folder first (cheap), then build the task (loads data) and train it."""
    prepare_run_dir(config)
    adamw_class(config)  # a missing bitsandbytes is said before the data and models load
    return run_training(build_task(config))


def record_environment(run_dir: Path, step: int, accelerator: Accelerator) -> None:
    """Append where this (re)start of the run trains to <run>/environment.jsonl, a line a start: a resumed run may
    go on elsewhere, and a model card names the hardware its model trained on."""
    line = {"step": step, "device": str(accelerator.device), "processes": accelerator.num_processes,
            "distributed": accelerator.distributed_type.value, "mixed_precision": accelerator.mixed_precision,
            **describe()}  # its "gpu" is the machine's, used or not: "device" says what trained
    with (run_dir / "environment.jsonl").open("a") as file:
        file.write(json.dumps(line) + "\n")


def run_training(task: TrainingTask) -> Path:
    """Train (or resume) the task's run; returns the folder of the exported model."""
    config = task.config
    run_dir = prepare_run_dir(config)
    checkpoints = checkpoint_dirs(run_dir)
    resumed = checkpoint_state(checkpoints[-1]) if checkpoints else {"step": 0, "elapsed_s": 0.0}
    start, elapsed = resumed["step"], resumed["elapsed_s"]  # the trackers need the step before the models load
    accelerator = Accelerator(
        mixed_precision=config.mixed_precision, gradient_accumulation_steps=config.gradient_accumulation_steps,
        cpu=uses_cpu(), log_with=[JsonLinesTracker(run_dir / "metrics.jsonl", start), "tensorboard"],
        project_dir=run_dir,  # TensorBoard, when installed, logs to <run>/tensorboard
    )
    sharded = accelerator.distributed_type == DistributedType.FSDP
    if accelerator.distributed_type == DistributedType.DEEPSPEED or (sharded and not accelerator.is_fsdp2):
        # the loop shards its EMA and optimizer state the way FSDP2 shards the weights (training/sharding.py)
        raise ValueError(f"{'FSDP1' if sharded else 'DeepSpeed'} is not supported by thermosynth's training loop: "
                         "launch with DDP (`accelerate launch --multi_gpu`) or FSDP2 (`--use_fsdp --fsdp_version 2`).")
    model = task.model.train()
    if any(p.dtype != torch.float32 for p in model.parameters()):  # a no-op cast still warns in diffusers
        model.float()
    parameters = list(trained_parameters(model).values())
    ema = EMAModel(parameters, decay=config.ema_decay, model_cls=type(model), model_config=model.config)
    # torch's fused AdamW kernel (one launch for all parameters on a GPU), on every device so that the path the GPU
    # takes is the one the CPU tests run
    fused = {} if config.adam_8bit else {"fused": True}
    optimizer = adamw_class(config)(parameters, lr=config.learning_rate, weight_decay=config.weight_decay,
                                    betas=(config.adam_beta1, 0.999), **fused)
    set_learning_rate = learning_rate_schedule(optimizer, config)

    if checkpoints:
        load_checkpoint(checkpoints[-1], model, ema, optimizer)
        logger.info("resuming %s from step %d (%.0f s trained)", run_dir, start, elapsed)
    ema_weights = EmaWeights(model, ema, accelerator)  # before `prepare`, which shards the model under FSDP
    export = run_dir / task.export_name
    if start >= config.steps or budget_spent(config, elapsed):
        logger.info("%s already trained for %d steps", run_dir, start)
        if budget_spent(config, elapsed):
            config.steps = start
            prepare_run_dir(config)
        if not export.is_dir():
            _export(task, ema_weights, run_dir)
        accelerator.wait_for_everyone()
        return export

    whole_optimizer_state = optimizer.state_dict() if sharded else None  # `prepare` drops it under FSDP
    trained, optimizer = accelerator.prepare(_ModelWithLoss(model, task.compute_loss), optimizer)
    assert accelerator.unwrap_model(trained).model is model  # DDP wraps the wrapper; FSDP2 shards in place
    ema.to(accelerator.device)
    if sharded:  # each process keeps the shards of the EMA and the optimizer state that match its weights
        parameters = list(trained_parameters(model).values())
        ema.shadow_params = [shard_like(s, p) for s, p in zip(ema.shadow_params, parameters, strict=True)]
        optimizer.optimizer.load_state_dict(shard_optimizer_state(whole_optimizer_state, parameters))
    if accelerator.is_main_process:
        logger.info("training on %d process%s (%s, %s)", accelerator.num_processes,
                    "es" if accelerator.num_processes > 1 else "", accelerator.distributed_type.value,
                    accelerator.device)
        record_environment(run_dir, start, accelerator)
    accelerator.init_trackers("tensorboard", init_kwargs={"tensorboard": {"purge_step": start + 1}})
    progress = TrainingProgress(config, start, elapsed, disable=not accelerator.is_main_process)
    images_per_step = config.batch_size * config.gradient_accumulation_steps * accelerator.num_processes
    window_start, window_loss, window_steps = time.perf_counter(), 0.0, 0
    clock_zero = time.perf_counter() - elapsed  # elapsed = now - clock_zero, continuing a resumed run's count

    for step in range(start, config.steps):
        set_learning_rate(step, elapsed)
        for micro in range(config.gradient_accumulation_steps):
            generator = step_generator(config.seed, accelerator.process_index, step, micro)
            batch = {k: v.to(accelerator.device) for k, v in task.draw_batch(generator).items()}
            with accelerator.accumulate(trained):
                with accelerator.autocast():
                    loss, extras = trained(batch, generator)
                accelerator.backward(loss)
                if accelerator.sync_gradients and config.max_grad_norm is not None:
                    accelerator.clip_grad_norm_(trained.parameters(), config.max_grad_norm)
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)
        done = step + 1
        value = loss.item()
        if not math.isfinite(value):  # stop before the EMA, a checkpoint or an export takes the broken weights in
            kept = checkpoint_dirs(run_dir)
            raise FloatingPointError(
                f"{run_dir}: the loss became {value} at step {done}; nothing was saved from this step on. Try a lower "
                "--lr, --mixed-precision no, or check the data for broken images. Re-running resumes from "
                f"{kept[-1].name if kept else 'the start'}."
            )
        ema.step(trained_parameters(model).values())
        window_loss += value
        window_steps += 1
        elapsed = _agreed_elapsed(accelerator, time.perf_counter() - clock_zero)
        progress.advance(done, elapsed)
        last = done == config.steps or budget_spent(config, elapsed)
        if last and done < config.steps:  # the budget ended the run: record the steps it resolved to
            logger.info("time budget of %.1f min spent after %d steps", config.time_budget, done)
            config.steps = done
            if accelerator.is_main_process:
                prepare_run_dir(config)

        if done % config.log_every == 0 or last:
            seconds = time.perf_counter() - window_start
            values = {"loss": window_loss / window_steps, "lr": optimizer.param_groups[0]["lr"],
                      "images_per_s": images_per_step * window_steps / seconds, "elapsed_s": elapsed, **extras}
            accelerator.log(values, step=done)
            progress.show(loss=f"{values['loss']:.4f}")
            window_start, window_loss, window_steps = time.perf_counter(), 0.0, 0
        if done % config.validate_every == 0 or last:
            grid = run_dir / "samples" / f"step-{done:07d}.png"
            if accelerator.is_main_process:
                logger.info("step %d: validating with the EMA weights (sampling a grid into %s)", done, grid)
                grid.parent.mkdir(exist_ok=True)
            metrics = ema_weights.run(lambda ema_model: task.validate(ema_model, grid))  # noqa: B023
            if accelerator.is_main_process:
                accelerator.log({f"val/{k}": v for k, v in metrics.items()}, step=done)
        if done % config.checkpoint_every == 0 or last:
            accelerator.wait_for_everyone()
            if accelerator.is_main_process or sharded:
                save_checkpoint(run_dir, done, model, ema, optimizer.optimizer, config.keep_checkpoints, elapsed,
                                write=accelerator.is_main_process)
        if last:
            break
    progress.close()
    accelerator.wait_for_everyone()
    final = _export(task, ema_weights, run_dir)
    accelerator.end_training()  # closes the trackers and the process group (which the export may gather over)
    return final
