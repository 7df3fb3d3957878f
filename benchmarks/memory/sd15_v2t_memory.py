"""Training memory of V2T from a pretrained SD-1.5 UNet, counted on the CPU (an estimate, not a GPU measurement).

What it counts, with the real SD-1.5 UNet shape (diffusers' UNet2DConditionModel at sample_size 64 and 768-wide
cross-attention, random weights) widened to 8 input channels as `train v2t --init-from` does:

- parameters, and which of them train (everything, or LoRA adapters of rank r on the attention projections plus
  conv_in, as `--lora-rank` does);
- bytes held per trained parameter: gradient (fp32), AdamW's two moments (fp32), the EMA copy (fp32);
- activations: the bytes autograd saves for the backward pass of one image, counted with saved-tensor hooks during a
  real forward pass (fp32, and bf16 autocast as `--mixed-precision bf16` runs). With gradient checkpointing the
  forward saves only each checkpointed module's inputs; the backward pass then recomputes one module at a time, so the
  largest single module's activations are added once.

Not counted: the CUDA context and allocator slack (typically 0.5-1.5 GB), cuDNN/cuBLAS workspaces, the frozen VAE
used by validation (83.7M parameters, 0.33 GB in fp32). Run: `python benchmarks/memory/sd15_v2t_memory.py` (the
recorded run used `--sizes 256 --batches 1 8 32`; 512 px was not run on the CPU).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import sys
from pathlib import Path

import diffusers
import torch
from diffusers import UNet2DConditionModel

from thermosynth.environment import processor_name
from thermosynth.models.stable_diffusion import add_lora, widen_conv_in

GB = 1e9
RESULTS = Path(__file__).with_name("RESULTS.md")


def sd15_v2t_unet() -> UNet2DConditionModel:
    torch.manual_seed(0)
    unet = UNet2DConditionModel(sample_size=64, cross_attention_dim=768)  # the defaults are SD-1.5's layout
    return widen_conv_in(unet, 4)


def attention_kernel() -> str:
    """Which SDPA kernel the CPU runs here: it decides how much attention saves for backward (CUDA's flash and
    memory-efficient kernels save only the output and a log-sum-exp per query, never the attention map)."""
    q = torch.randn(1, 8, 64, 40, requires_grad=True)
    out = torch.nn.functional.scaled_dot_product_attention(q, q, q)
    return out.grad_fn.name()


def checkpointed(name: str) -> bool:
    """The modules diffusers' gradient checkpointing wraps in this UNet (diffusers 0.42): every resnet of a block,
    and every transformer block inside an attention."""
    parts = name.split(".")
    return len(parts) >= 2 and parts[-1].isdigit() and parts[-2] in ("resnets", "transformer_blocks")


class SavedBytes:
    """Bytes autograd saves for backward (each storage once), in all and per checkpointed module, and the bytes of
    the checkpointed modules' inputs (what checkpointing keeps instead of their insides)."""

    def __init__(self, parameters: set[int]):
        self.total, self.inputs, self.current = 0, 0, None
        self.seen = {(ptr, None) for ptr in parameters}  # weights are counted as weights, not as activations
        self.per_module: dict[str, int] = {}

    def _new(self, tensor: torch.Tensor) -> int:
        key = (tensor.untyped_storage().data_ptr(), None)
        if key in self.seen:
            return 0
        self.seen.add(key)
        return tensor.untyped_storage().nbytes()

    def pack(self, tensor: torch.Tensor) -> torch.Tensor:
        size = self._new(tensor)
        self.total += size
        if self.current is not None:
            self.per_module[self.current] = self.per_module.get(self.current, 0) + size
        return tensor

    def enter(self, name: str, args: tuple) -> None:
        self.current = name
        self.inputs += sum(self._new(a) for a in args if isinstance(a, torch.Tensor))


def activation_bytes(unet: UNet2DConditionModel, latent: int, bf16: bool, batch: int) -> SavedBytes:
    """Count a forward pass of `batch` images (512 px is a 64x64 latent), with the model's checkpointing as set."""
    counter = SavedBytes({p.untyped_storage().data_ptr() for p in unet.parameters()})
    handles = []
    for name, module in unet.named_modules():
        if checkpointed(name):
            handles.append(module.register_forward_pre_hook(lambda m, a, n=name: counter.enter(n, a)))
            handles.append(module.register_forward_hook(lambda m, a, o: setattr(counter, "current", None)))
    sample, states = torch.randn(batch, 8, latent, latent), torch.randn(batch, 77, 768)
    autocast = torch.autocast("cpu", dtype=torch.bfloat16) if bf16 else contextlib.nullcontext()
    with torch.autograd.graph.saved_tensors_hooks(counter.pack, lambda t: t), autocast:
        unet(sample, 500, encoder_hidden_states=states)
    for handle in handles:
        handle.remove()
    return counter


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[256, 512], help="image sides in pixels")
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 8, 32])
    parser.add_argument("--lora-rank", type=int, default=4)
    args = parser.parse_args()

    unet = sd15_v2t_unet().train()
    total = sum(p.numel() for p in unet.parameters())
    lora = sd15_v2t_unet()
    add_lora(lora, args.lora_rank, train_conv_in=True)
    lora_trained = sum(p.numel() for p in lora.parameters() if p.requires_grad)
    lora_total = sum(p.numel() for p in lora.parameters())
    del lora

    # Bytes per image, and per step whatever the batch (autocast's bf16 copies of the weights): from batches 1 and 2.
    plain, kept, per_step = {}, {}, {}
    for size in args.sizes:
        for bf16 in (False, True):
            counts = {}
            for batch in (1, 2):
                unet.disable_gradient_checkpointing()
                full = activation_bytes(unet, size // 8, bf16, batch)
                unet.enable_gradient_checkpointing()
                outside = activation_bytes(unet, size // 8, bf16, batch)  # inside checkpointed modules: nothing
                # forward: saved outside the checkpointed modules + their inputs; backward recomputes one at a time
                counts[batch] = (full.total, outside.total + outside.inputs + max(full.per_module.values()))
            plain[size, bf16] = counts[2][0] - counts[1][0]
            kept[size, bf16] = counts[2][1] - counts[1][1]
            per_step[size, bf16] = (counts[1][0] - plain[size, bf16], counts[1][1] - kept[size, bf16])
            print(f"{size} px, {'bf16' if bf16 else 'fp32'}: {plain[size, bf16] / GB:.2f} GB saved per image "
                  f"(+{per_step[size, bf16][0] / GB:.2f} per step), {kept[size, bf16] / GB:.2f} GB with "
                  f"checkpointing (+{per_step[size, bf16][1] / GB:.2f})", flush=True)

    # weights in fp32 (autocast keeps fp32 masters); per trained parameter: grad 4 + AdamW 8 + EMA 4 bytes
    rows = []
    for label, params, trained in (("full fine-tuning", total, total),
                                   (f"LoRA rank {args.lora_rank} + conv_in", lora_total, lora_trained)):
        fixed = 4 * params + 16 * trained
        for bf16 in (False, True):
            for checkpointing in (False, True):
                for size in args.sizes:
                    per_image = (kept if checkpointing else plain)[size, bf16]
                    step = fixed + per_step[size, bf16][checkpointing]
                    cells = [f"{(step + batch * per_image) / GB:.1f}" for batch in args.batches]
                    precision = ("bf16 autocast" if bf16 else "fp32") + (" + checkpointing" if checkpointing else "")
                    rows.append(f"| {label} | {precision} | {size} | " + " | ".join(cells) + " |")

    header = ("| training | precision | px | " + " | ".join(f"batch {b} (GB)" for b in args.batches) + " |\n"
              + "|---|---|---|" + "---|" * len(args.batches))
    table = "\n".join([header, *rows])
    print(table)
    stamp = datetime.date.today().isoformat()
    with RESULTS.open("a") as results:
        results.write(
            f"\n## {stamp}: `python {' '.join(sys.argv)}`\n\n"
            f"Machine: {processor_name()}, {torch.get_num_threads()} threads; torch "
            f"{torch.__version__}, diffusers {diffusers.__version__}. UNet: {total / 1e6:.1f}M parameters; LoRA rank "
            f"{args.lora_rank}: {lora_trained / 1e6:.2f}M trained of {lora_total / 1e6:.1f}M. Attention's backward "
            f"on this CPU: {attention_kernel()}.\n\n"
            + "\n".join(f"- activations saved per image at {size} px, {'bf16' if bf16 else 'fp32'}: "
                        f"{plain[size, bf16] / GB:.2f} GB (+{per_step[size, bf16][0] / GB:.2f} GB per step), with "
                        f"checkpointing {kept[size, bf16] / GB:.2f} GB (+{per_step[size, bf16][1] / GB:.2f} GB)"
                        for size, bf16 in plain)
            + f"\n\nEstimated training memory (weights + gradients + AdamW + EMA + activations; an estimate):\n\n"
            f"{table}\n")


if __name__ == "__main__":
    main()
