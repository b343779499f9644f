"""Tiny random-weight Vec2Face+ files, built from SynID's module classes and saved in the released layouts.

`build_tiny_vec2face_plus(root)` writes the five files Vec2Face+ reads, under their hub paths, so `model_id` and
`estimators_id` can both be `root`:
- `vec2face_plus/main_model.pth`: `{"model_vec2face": state_dict}` (Vec2Face's generator layout);
- `vec2face_plus/pose_model.pth`: `{"model_vec2face": ..., "pose_model": ..., "epoch": ...}` with the generator's
  LoRA layers in the released LoRALinear keys (`.base.weight`, `.A`, `.B`), the base weights equal to the main model's;
- `weights/arcface-r100-glint360k.pth`, `weights/magface-r100-glint360k.pth`: reduced insightface iresnets;
- `weights/6DRepNet_300W_LP_AFLW2000.pth`: a reduced deploy-layout RepVGG SixDRepNet.
The 7x7 row grid and 112x112 images stay, so the real loading path and generation run on them unchanged.
"""

from __future__ import annotations

from pathlib import Path

from synid_assets.random_models.vec2face import TINY_HEADS, tiny_vec2face_config

TINY_LORA_RANK = 8
TINY_POSE_CHANNELS = (4, 4, 8, 8)
TINY_HEAD_POSE = {"blocks": (2, 2, 2, 1), "widths": (8, 8, 16, 16, 32)}

__all__ = ["TINY_HEADS", "build_tiny_vec2face_plus", "tiny_options"]


def build_pose_checkpoint(path: Path, main_state: dict, config, rank: int, channels, seed: int = 0) -> Path:
    """A pose_model.pth: the main weights plus random LoRA (B non-zero, so the adapters change the output) and a
    random PoseCondModel (its Linear non-zero, so the landmark image matters)."""
    import torch

    from synid_assets.core.generation.vec2face_model import Vec2FaceGenerator
    from synid_assets.core.generation.vec2face_plus_model import PoseCondModel, add_pose_lora, peft_to_upstream

    torch.manual_seed(seed + 1)
    generator = Vec2FaceGenerator(config)
    generator.load_state_dict(main_state)
    generator = add_pose_lora(generator, rank)
    pose_model = PoseCondModel(channels, config.decoder_embed_dim)
    with torch.no_grad():
        for name, parameter in generator.named_parameters():
            if "lora_B" in name:
                parameter.normal_(0.0, 0.02)
        torch.nn.init.normal_(pose_model.linear.weight, std=0.02)
        torch.nn.init.normal_(pose_model.linear.bias, std=0.02)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"model_vec2face": peft_to_upstream(generator.state_dict()), "pose_model": pose_model.state_dict(),
                "epoch": 9}, path)
    return path


def build_tiny_vec2face_plus(root: Path, seed: int = 0) -> Path:
    """The five tiny files under `root` (about 2 MB); load with tiny_options(root)."""
    import torch

    from synid_assets.core.analysis.head_pose import HeadPoseConfig, SixDRepNet
    from synid_assets.random_models.faces import tiny_frs_checkpoint
    from synid_assets.random_models.vec2face import build_vec2face

    root = Path(root)
    config = tiny_vec2face_config()
    main = build_vec2face(root / "vec2face_plus" / "main_model.pth", config, seed)
    main_state = torch.load(main, map_location="cpu", weights_only=True)["model_vec2face"]
    build_pose_checkpoint(root / "vec2face_plus" / "pose_model.pth", main_state, config, TINY_LORA_RANK,
                          TINY_POSE_CHANNELS, seed)
    tiny_frs_checkpoint("arcface-r100-glint360k", root / "weights" / "arcface-r100-glint360k.pth", seed)
    tiny_frs_checkpoint("arcface-r100-glint360k", root / "weights" / "magface-r100-glint360k.pth", seed + 7)
    torch.manual_seed(seed + 3)
    head_pose = SixDRepNet(HeadPoseConfig(**TINY_HEAD_POSE))
    torch.save(head_pose.state_dict(), root / "weights" / "6DRepNet_300W_LP_AFLW2000.pth")
    return root


def tiny_options(root: Path) -> dict:
    """Backend options that load the tiny files (sizes not in the weights' shapes: heads, FR stages)."""
    from synid_assets.random_models.faces import TINY_CHANNELS, TINY_UNITS

    return {"model_id": str(root), "estimators_id": str(root), "num_heads": TINY_HEADS,
            "decoder_num_heads": TINY_HEADS, "fr_units": list(TINY_UNITS), "fr_channels": list(TINY_CHANNELS),
            "device": "cpu"}
