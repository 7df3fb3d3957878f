"""Training LaPIG's identity-conditioned visible face generator.

The UNet denoises 64-px face photos in pixel space, cross-attending to Arc2Face's identity prompt (`photo of a id
person`, the `id` token's embedding replaced by the person's SFace vector) beside the photo's caption, both read by
the frozen MiniLM text encoder; the SFace vector and the view (frontal, left or right profile, one-hot) also reach
it through its time embedding (face_class_labels; models/configs.py says why). Why pixels at 64 px: a whole face
fits in the UNet's view, nothing has to be learnt first (thermosynth's autoencoders were trained on road scenes, not
faces), and a 17.0M UNet takes 2.1 s a step of 16 faces on 2 CPU cores alone, 2.7-2.9 s as a whole training step:
an hour made 1,327 steps (3.4 passes over the 6,300 photos of CFP's 450 training identities). Identity and caption are
dropped together (`condition_dropout`) so that classifier-free guidance contrasts with no one in particular.

LaPIG Eq. 3, the SSIM pose loss, pulls each generated view towards the pose of its reference photo:

    L_pose = - sum_i SSIM(pose_i, generated pose_i)      over the reference poses i (LaPIG uses 4)

Here (`pose_loss_weight`) it compares each training photo with the clean image the UNet predicts from it,
x0_hat (training/diffusion.py's predicted_x0), for t <= pose_t_max, divided by the batch size.

The identity loss (`identity_loss_weight`, not in LaPIG; face-swapping models and PuLID train with one) pays for who
the predicted face is: x0_hat is aligned as the photo's own face was (its five landmarks) and read by SFace, made
differentiable (models/sface_network.py), and compared with the photo's SFace vector s_i, which also conditions it,
and with the vectors s_j of the batch's other people:

    L_id = sum_i (1 - cos(f_i, s_i) + mean_j cos(f_i, s_j)) / B      f_i = SFace(align_i(x0_hat_i)), j: other people

over frontal photos with their own vector, at every noise level, because the noisy steps are where the identity is
decided and the noise loss alone pays little for it there. The other people's term is there because without it
(1 - cos alone, two hour-long runs) the loss made faces SFace reads more readily, raising the cosine with everyone's
vector alike, not faces more like their person (benchmarks/faces/RESULTS.md): a generic face gains nothing here.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from diffusers import DDIMScheduler, DDPMScheduler, UNet2DConditionModel
from diffusers.utils.torch_utils import randn_tensor
from torchmetrics.functional.image import structural_similarity_index_measure

from thermosynth.data.captions import read_metadata
from thermosynth.data.datasets import visible_to_tensor
from thermosynth.data.errors import DataError
from thermosynth.data.faces import VIEWS, FaceImages, face_caption, identity_vectors, read_cfp
from thermosynth.distributed import process_state
from thermosynth.models.configs import build_face_unet
from thermosynth.models.identity import IdentityInjection, make_identity_encoder
from thermosynth.models.sface_network import SFaceNetwork, align_for_sface, alignment_theta
from thermosynth.models.text_encoders import TextStateCache, hidden_size, load_text_encoder
from thermosynth.pipelines.faces import IdentityFacePipeline, face_class_labels, join_condition
from thermosynth.render import image_grid, tensor_to_rgb
from thermosynth.training.config import FaceTrainConfig
from thermosynth.training.diffusion import pixel_noise_schedule, predicted_x0, prediction_target
from thermosynth.training.loop import TrainingTask, train_with

logger = logging.getLogger(__name__)

IDENTITY_CACHE = "identity_vectors.safetensors"  # in the run folder: the encoder reads each photo once per run


def pose_loss(reference: torch.Tensor, generated: torch.Tensor) -> torch.Tensor:
    """LaPIG Eq. 3 for (N, C, H, W) reference poses and the views generated for them, in [-1, 1]: minus the sum over
    the N pairs of their SSIM (Gaussian window 11, sigma 1.5, on the 0..1 scale). Differentiable."""
    if reference.shape != generated.shape or reference.ndim != 4:
        raise ValueError(f"need reference and generated poses of one (N, C, H, W) shape, got "
                         f"{tuple(reference.shape)} and {tuple(generated.shape)}")
    dtype = torch.promote_types(generated.dtype, torch.float32)  # half precision is too coarse for SSIM's variances
    per_pose = structural_similarity_index_measure((generated.to(dtype) + 1) / 2, (reference.to(dtype) + 1) / 2,
                                                   data_range=1.0, reduction="none")
    return -per_pose.sum()


def identity_cosines(x0: torch.Tensor, batch: dict[str, torch.Tensor],
                     sface: SFaceNetwork) -> tuple[torch.Tensor, torch.Tensor]:
    """SFace's cosine between each aligned predicted face and its photo's vector, and its mean cosine with the vectors
    of the other people in the batch (0 where there are none): x0 (N, 3, S, S) and the batch's rows for them
    (alignment, mirrored, identity_targets, people). Mirrored samples are turned back first: the alignment was
    measured on the photo as it is."""
    faces = torch.where(batch["mirrored"][:, None, None, None], x0.flip(-1), x0)
    made = F.normalize(sface(align_for_sface(faces, batch["alignment"])), dim=1)
    cosines = made @ F.normalize(batch["identity_targets"].to(made.dtype), dim=1).T  # (N, N): face i, vector j
    others = (batch["people"][:, None] != batch["people"][None, :]).to(cosines.dtype)
    return cosines.diagonal(), (cosines * others).sum(1) / others.sum(1).clamp(min=1)


def identity_loss(own: torch.Tensor, others: torch.Tensor) -> torch.Tensor:
    """L_id's sum (module docstring) from identity_cosines' two cosines; compute_loss divides it by the batch."""
    return (1 - own + others).sum()


def predicted_identity_cosines(batch: dict[str, torch.Tensor], noisy: torch.Tensor, prediction: torch.Tensor,
                               timesteps: torch.Tensor, scheduler: DDPMScheduler,
                               sface: SFaceNetwork) -> tuple[torch.Tensor, torch.Tensor]:
    """identity_cosines of the clean faces the UNet predicts, for the batch's samples with `identity_known`."""
    known = batch["identity_known"]
    x0 = predicted_x0(noisy[known], prediction[known], timesteps[known], scheduler).float()
    rows = {k: batch[k][known] for k in ("alignment", "mirrored", "identity_targets", "people")}
    return identity_cosines(x0, rows, sface)


def compute_loss(unet: UNet2DConditionModel, batch: dict[str, torch.Tensor], scheduler: DDPMScheduler,
                 generator: torch.Generator, pose_loss_weight: float, pose_t_max: int,
                 identity_loss_weight: float = 0.0, sface: SFaceNetwork | None = None):
    """MSE of the UNet's prediction (the scheduler's prediction type), plus the pose loss on the predicted clean faces
    of the samples with t <= pose_t_max, plus the identity loss on those with `identity_known`.

    batch: images (B, 3, S, S) in [-1, 1], class_labels (face_class_labels), states (B, L, D), mask (B, L); for the
    identity loss also identity_known (B,), identity_targets (B, d), alignment (B, 2, 3), mirrored (B,),
    people (B,): the photos' identities."""
    images = batch["images"]
    size = images.shape[0]
    noise = randn_tensor(images.shape, generator=generator, device=images.device, dtype=images.dtype)
    timesteps = torch.randint(0, scheduler.config.num_train_timesteps, (size,), generator=generator).to(images.device)
    noisy = scheduler.add_noise(images, noise, timesteps)
    prediction = unet(noisy, timesteps, encoder_hidden_states=batch["states"], encoder_attention_mask=batch["mask"],
                      class_labels=batch["class_labels"]).sample
    target = prediction_target(scheduler, images, noise, timesteps)
    loss = F.mse_loss(prediction.float(), target.float())
    extras = {"mse": loss.item()}
    selected = timesteps <= pose_t_max
    if pose_loss_weight and selected.any():
        x0 = predicted_x0(noisy[selected], prediction[selected], timesteps[selected], scheduler).clamp(-1, 1)
        # Divided by the whole batch, so a sample's weight does not depend on how many others fall under t_max.
        pose = pose_loss(images[selected], x0) / size
        loss = loss + pose_loss_weight * pose
        extras["pose_ssim"] = -pose.item() * size / int(selected.sum())
    known = batch.get("identity_known")
    if identity_loss_weight and known is not None and known.any():
        own, others = predicted_identity_cosines(batch, noisy, prediction, timesteps, scheduler, sface)
        loss = loss + identity_loss_weight * identity_loss(own, others) / size
        extras["identity_cos"] = own.mean().item()
        extras["identity_gap"] = (own - others).mean().item()  # how much the faces are their person, not anyone
    return loss, extras


def _photo_captions(config: FaceTrainConfig, faces: FaceImages) -> list[str] | None:
    """Each photo's caption from `config.captions` (a metadata.jsonl), or None: measured captions (the view)."""
    if config.captions is None:
        return None
    by_path = {path.resolve(): captions[0] for path, captions in read_metadata(config.captions)}
    missing = [p.path for p in faces.photos if p.path.resolve() not in by_path]
    if missing:
        raise DataError(f"{config.captions}: no caption for {len(missing)} training photos, e.g. {missing[0]}. "
                        "Caption every photo (`thermosynth caption faces`), or train without --captions.")
    return [by_path[p.path.resolve()] for p in faces.photos]


def build_task(config: FaceTrainConfig) -> TrainingTask:
    device = process_state().device
    if len(config.data.paths) != 1:
        raise DataError("face training reads one CFP-layout folder (Data/Images, Data/fiducials.csv); give one --data")
    first, last = config.identities
    photos = read_cfp(config.data.paths[0], range(first, last + 1))
    encoder = make_identity_encoder(config.identity_encoder, config.identity_model)
    vectors = identity_vectors(photos, encoder, Path(config.output_dir) / IDENTITY_CACHE, largest_face=True)
    for path, reason in vectors.skipped:
        logger.warning("no identity vector from %s: %s", path, reason)
    faces = FaceImages(photos, vectors, config.image_size)
    logger.info("faces: %d photos of %d identities (%d photos without a readable face skipped; identities without "
                "any vector, left out: %s)", len(faces), len(vectors.vectors), len(vectors.skipped),
                faces.left_out or "none")
    captions = _photo_captions(config, faces)

    tokenizer, text_encoder = load_text_encoder(config.text_encoder)
    text_encoder.to(device)
    injection = IdentityInjection(tokenizer, text_encoder)
    with torch.no_grad():  # the frozen encoder reads each identity once
        identity_states = torch.cat([injection(chunk).cpu() for chunk in faces.vectors.split(256)]).float()
        no_identity = injection(torch.zeros(1, faces.vectors.shape[1])).cpu().float()
    caption_states = TextStateCache(tokenizer, text_encoder, ["", *(captions or map(face_caption, VIEWS))])
    scheduler = pixel_noise_schedule(config.num_train_timesteps)
    torch.manual_seed(config.seed)
    unet = build_face_unet(config.architecture, hidden_size(text_encoder), len(VIEWS), faces.vectors.shape[1])
    sface = SFaceNetwork().to(device) if config.identity_loss_weight else None
    if sface is not None:  # the identity loss's alignments: photos with their own vector have landmarks
        has_landmarks = ~faces.landmarks.isnan().any(dim=(1, 2))
        alignment = torch.zeros(len(faces), 2, 3)
        for index in has_landmarks.nonzero().flatten().tolist():
            alignment[index] = alignment_theta(faces.landmarks[index].numpy(), config.image_size)

    def draw_batch(generator):
        batch = faces.sample(config.batch_size, generator)
        dropped = torch.rand(config.batch_size, generator=generator) < config.condition_dropout
        states = torch.where(dropped[:, None, None], no_identity, identity_states[batch["indices"]])
        texts = [captions[i] if captions else face_caption(VIEWS[v])
                 for i, v in zip(batch["indices"].tolist(), batch["views"].tolist(), strict=True)]
        text_states, text_mask = caption_states(["" if d else t for t, d in zip(texts, dropped.tolist(), strict=True)])
        states, mask = join_condition(states, text_states, text_mask)
        vectors = torch.where(dropped[:, None], 0.0, batch["identity_vectors"])  # dropped with the prompt
        labels = face_class_labels(unet.config, vectors, [VIEWS[v] for v in batch["views"].tolist()])
        drawn = {"images": batch["images"], "class_labels": labels, "states": states, "mask": mask}
        if sface is not None:
            drawn.update(identity_known=has_landmarks[batch["indices"]] & ~dropped, identity_targets=vectors,
                         alignment=alignment[batch["indices"]], mirrored=batch["mirrored"],
                         people=batch["identities"])
        return drawn

    def loss(model, batch, generator):
        return compute_loss(model, batch, scheduler, generator, config.pose_loss_weight, config.pose_t_max,
                            config.identity_loss_weight, sface)

    frontal_landmarks = faces.frontal_template()

    def pipeline_for(model):
        sampler = DDIMScheduler.from_config(scheduler.config, timestep_spacing="trailing")
        return IdentityFacePipeline(model, sampler, text_encoder, tokenizer, image_size=config.image_size,
                                    identity_dim=int(faces.vectors.shape[1]), identity_encoder=encoder.name,
                                    frontal_landmarks=frontal_landmarks)

    # Validation: four training identities (spread over the range), a real photo then each view generated.
    shown = sorted(set(faces.identities.tolist()))
    shown = [shown[i] for i in np.linspace(0, len(shown) - 1, min(4, len(shown))).round().astype(int)]
    references = [int((faces.identities == i).nonzero()[0]) for i in shown]

    def validate(model, grid_path):
        pipeline = pipeline_for(model)
        pipeline.set_progress_bar_config(disable=True)
        identity = torch.stack([faces.vectors[r] for r in references]).repeat_interleave(len(VIEWS), dim=0)
        views = [v for _ in references for v in VIEWS]
        made = pipeline(identity, views, num_inference_steps=config.validation_inference_steps,
                        generator=torch.Generator().manual_seed(config.seed), output_type="pt",
                        identity_guidance=0).images  # what the UNet learnt, without SFace's steering
        rows = [[tensor_to_rgb(visible_to_tensor(faces.images[r].numpy()))]
                + [tensor_to_rgb(m) for m in made[k * len(VIEWS):(k + 1) * len(VIEWS)]]
                for k, r in enumerate(references)]
        image_grid(rows).save(grid_path)
        return {"generated_mean": made.mean().item(), "generated_std": made.std().item()}

    def export(model, folder):
        pipeline_for(model).save_pretrained(folder)

    return TrainingTask(config, unet, draw_batch, loss, validate, export, export_name="pipeline")


def train(config: FaceTrainConfig) -> Path:
    """Train the identity-conditioned face generator described by `config`; returns the exported pipeline folder."""
    return train_with(config, build_task)
