"""Vec2Face+'s pose-controlled generator: Vec2Face's fMAE with LoRA on the ViT attention and a landmark pose token.

Matched against github.com/HaiyuWu/Vec2Face_plus @ 7aea1003197451d742ba17dcbe6a281aafe3868d:
- `pixel_generator/vec2face/pose_condition.py` PoseCondModel: four 3x3 stride-2 convolutions (3 -> 32 -> 64 -> 128 ->
  256, each with ReLU) over the 112x112 landmark image, flattened (256 x 7 x 7) and a zero-initialised Linear to a
  768-d token [n, 1, 768];
- `pixel_generator/vec2face/lora.py` LoRALinear on `attn.qkv` and `attn.proj` of every encoder and decoder block
  (`model_vec2face.py` Attention with use_lora): out = base(x) + (alpha / r) x A^T B^T, A [r, in], B [out, r];
  keys `<layer>.base.weight`, `<layer>.base.bias`, `<layer>.A`, `<layer>.B`. SynID builds the same adapters with
  peft (LoRA r = 8, alpha = 32, dropout 0: `lora_A.default.weight` = A, `lora_B.default.weight` = B, scaling
  alpha / r) and maps the keys both ways;
- `pose_control.py`: `vec2face_plus/pose_model.pth` holds `model_vec2face` (the generator with LoRA, base weights
  frozen during pose training, so equal to `main_model.pth`'s) and `pose_model` (PoseCondModel); generation passes
  the pose token as `cond` to `forward_decoder`, which then skips `decoder_embed` and pads every dropped and masked
  row with the pose token instead of the vector token (kept here as trained). Its mask ratio: normal(0.85, 0.05)
  truncated to [0.8, 0.9], with ceil(49 x 0.8) = 40 rows dropped.

Landmark images: the released examples (`landmarks/images/2758_{0,1}.jpg`) are black 112x112 images with filled
dots of radius about 2.5 px: eyes red, nose tip green, mouth corners blue. The detector that made the training
images is not published, so `landmark_image` draws them from a five-point head model turned by the yaw
(orthographic), calibrated on those two examples (a profile pair: nose at x 39 and 72, eyes at y 48.5, nose 65,
mouth 82.5, eye and mouth pairs 5 px apart). Positive yaw puts the nose to the image's right.
torch is imported by this module: import it only where a model is loaded.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import torch
from torch import nn

from synid_assets.core.errors import ModelLoadError
from synid_assets.core.generation.vec2face_model import (
    Vec2FaceGenerator,
    config_from_state_dict,
    read_checkpoint_dict,
)

LORA_TARGETS = r"(decoder_)?blocks\.\d+\.attn\.(qkv|proj)"  # peft target_modules: matched against full names
LORA_ALPHA = 32
POSE_CHANNELS = (32, 64, 128, 256)
IMAGE_SIZE = 112

# The five-point head model (px in the 112x112 image): x offset, image row, depth towards the camera.
LANDMARK_CENTRE_X = 55.5
LANDMARK_POINTS = (  # (x, y, z, rgb)
    (-14.7, 48.5, 2.5, (255, 0, 0)),  # eyes
    (14.7, 48.5, 2.5, (255, 0, 0)),
    (0.0, 65.0, 16.9, (0, 255, 0)),  # nose tip
    (-12.2, 82.5, 1.0, (0, 0, 255)),  # mouth corners
    (12.2, 82.5, 1.0, (0, 0, 255)),
)
LANDMARK_RADIUS = 2.5


class PoseCondModel(nn.Module):
    """Landmark images [n, 3, 112, 112] in [-1, 1] -> pose tokens [n, 1, token_dim]."""

    def __init__(self, channels: Sequence[int] = POSE_CHANNELS, token_dim: int = 768) -> None:
        super().__init__()
        widths = (3, *channels)
        self.conv1, self.conv2, self.conv3, self.conv4 = (
            nn.Conv2d(widths[i], widths[i + 1], kernel_size=3, stride=2, padding=1) for i in range(4)
        )
        self.linear = nn.Linear(7 * 7 * widths[-1], token_dim)
        nn.init.zeros_(self.linear.weight)  # as published: the pose token starts at zero
        nn.init.zeros_(self.linear.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for conv in (self.conv1, self.conv2, self.conv3, self.conv4):
            x = torch.relu(conv(x))
        return self.linear(torch.flatten(x, 1)).unsqueeze(1)


def add_pose_lora(model: nn.Module, rank: int = 8, alpha: float = LORA_ALPHA) -> nn.Module:
    """LoRA adapters (peft) on attn.qkv and attn.proj of every encoder and decoder block, in place."""
    from peft import LoraConfig, inject_adapter_in_model

    config = LoraConfig(r=int(rank), lora_alpha=alpha, lora_dropout=0.0, target_modules=LORA_TARGETS, bias="none")
    model = inject_adapter_in_model(config, model)
    model.requires_grad_(False)
    return model


def upstream_to_peft(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Released LoRALinear keys (`.base.weight`, `.A`, `.B`) -> peft's (`.base_layer.weight`, `.lora_A.default.weight`,
    `.lora_B.default.weight`); other keys unchanged."""
    out = {}
    for key, value in state.items():
        stem, _, leaf = key.rpartition(".")
        if leaf in ("A", "B"):
            key = f"{stem}.lora_{leaf}.default.weight"
        elif stem.endswith(".base") and leaf in ("weight", "bias"):
            key = f"{stem[: -len('.base')]}.base_layer.{leaf}"
        out[key] = value
    return out


def peft_to_upstream(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The inverse of upstream_to_peft (random-weight checkpoints are saved in the released layout)."""
    out = {}
    for key, value in state.items():
        for peft_part, released in ((".lora_A.default.weight", ".A"), (".lora_B.default.weight", ".B"),
                                    (".base_layer.weight", ".base.weight"), (".base_layer.bias", ".base.bias")):
            if key.endswith(peft_part):
                key = key[: -len(peft_part)] + released
                break
        out[key] = value
    return out


def lora_rank(state: Mapping[str, torch.Tensor]) -> int:
    return int(state["blocks.0.attn.qkv.A"].shape[0])


def pose_channels(state: Mapping[str, torch.Tensor]) -> tuple[tuple[int, ...], int]:
    """(conv widths, token width) of a released PoseCondModel state_dict."""
    channels = tuple(int(state[f"conv{i}.weight"].shape[0]) for i in range(1, 5))
    return channels, int(state["linear.weight"].shape[0])


def load_pose_checkpoint(
    path: str | Path, num_heads: int = 12, decoder_num_heads: int = 16, lora_alpha: float = LORA_ALPHA,
    device: str = "cpu", dtype: str = "float32",
) -> tuple[Vec2FaceGenerator, PoseCondModel]:
    """The LoRA generator and the pose model of a released `pose_model.pth` (`model_vec2face` with LoRALinear keys,
    `pose_model`), both loaded strictly."""
    path = Path(path).expanduser()
    raw = read_checkpoint_dict(path, "Vec2Face+ pose")
    state, pose_state = raw.get("model_vec2face"), raw.get("pose_model")
    if not isinstance(state, dict) or "blocks.0.attn.qkv.A" not in state or not isinstance(pose_state, dict):
        raise ModelLoadError(
            f"Vec2Face+ pose checkpoint {str(path)!r} holds no LoRA generator and pose model "
            "(keys 'model_vec2face' with blocks.0.attn.qkv.A, and 'pose_model')"
        )
    try:
        mapped = upstream_to_peft(state)
        base = {k.replace(".base_layer.", "."): v for k, v in mapped.items() if ".lora_" not in k}
        generator = Vec2FaceGenerator(config_from_state_dict(base, num_heads, decoder_num_heads))
        generator = add_pose_lora(generator, lora_rank(state), lora_alpha)
        generator.load_state_dict(mapped, strict=True)
        channels, token_dim = pose_channels(pose_state)
        pose_model = PoseCondModel(channels, token_dim)
        pose_model.load_state_dict(pose_state, strict=True)
    except (KeyError, RuntimeError, ValueError) as error:
        message = f"Vec2Face+ pose checkpoint {str(path)!r} does not match the Vec2Face+ layout: {error}"
        raise ModelLoadError(message) from error
    torch_dtype = getattr(torch, dtype)
    return (generator.to(device=device, dtype=torch_dtype).eval().requires_grad_(False),
            pose_model.to(device=device, dtype=torch_dtype).eval().requires_grad_(False))


def landmark_points(yaw: float) -> np.ndarray:
    """[5, 2] (x, y) of eyes, nose tip and mouth corners for a head turned by `yaw` degrees."""
    turn = math.radians(float(yaw))
    return np.array([(LANDMARK_CENTRE_X + x * math.cos(turn) + z * math.sin(turn), y)
                     for x, y, z, _ in LANDMARK_POINTS])


def landmark_image(yaw: float, size: int = IMAGE_SIZE) -> np.ndarray:
    """The [size, size, 3] uint8 landmark image for `yaw`: coloured dots on black, as the released examples."""
    image = np.zeros((size, size, 3), np.uint8)
    rows, cols = np.mgrid[0:size, 0:size] + 0.5  # pixel centres
    for (x, y), (_, _, _, rgb) in zip(landmark_points(yaw) * size / IMAGE_SIZE, LANDMARK_POINTS, strict=True):
        image[(cols - x) ** 2 + (rows - y) ** 2 <= LANDMARK_RADIUS**2] = rgb
    return image


def landmark_tensor(yaws: Sequence[float]) -> torch.Tensor:
    """[n, 3, 112, 112] landmark images normalised as upstream (ToTensor, Normalize(0.5, 0.5)): [-1, 1]."""
    stack = np.stack([landmark_image(yaw) for yaw in yaws]).astype(np.float32) / 255.0
    return torch.from_numpy((stack - 0.5) / 0.5).permute(0, 3, 1, 2).contiguous()


def render_pose(
    generator: Vec2FaceGenerator, pose_model: PoseCondModel, rep: torch.Tensor, drop_rows: torch.Tensor,
    masked_rows: torch.Tensor, landmarks: torch.Tensor,
) -> torch.Tensor:
    """Images [n, 3, 112, 112] in [-1, 1] (unclipped) of the LoRA generator with the landmark pose token: as
    upstream's forward with cond, the encoder output enters the decoder without decoder_embed."""
    x, keep, masked = generator.encode(rep, drop_rows, masked_rows)
    return generator.decode(x, keep, masked, pad_token=pose_model(landmarks.to(rep.dtype)))
