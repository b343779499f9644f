"""A tiny random-weight Vec2Face generator, built from SynID's module classes and saved in the released layout.

The file is what `weights/vec2face_generator.pth` of BooBooWu/Vec2Face is: a torch checkpoint whose
`model_vec2face` entry is the generator's state_dict (key names as upstream). Only the sizes are reduced: the 7x7 row
grid and the 112x112 output stay, so the real loading path and generation run on it unchanged.
"""

from __future__ import annotations

from pathlib import Path

TINY_HEADS = 2  # num_heads and decoder_num_heads of the tiny model (head counts are not in the weights' shapes)


def tiny_vec2face_config():
    from synid_assets.core.generation.vec2face_model import Vec2FaceConfig

    return Vec2FaceConfig(embed_dim=32, depth=1, num_heads=TINY_HEADS, decoder_embed_dim=32, decoder_depth=1,
                          decoder_num_heads=TINY_HEADS, z_channels=8, level_channels=(32, 32, 64, 64, 64),
                          num_res_blocks=1)


def build_vec2face(path: Path, config=None, seed: int = 0) -> Path:
    """Save a random-weight generator of `config` (default: the released ViT-B/16 sizes) as a released checkpoint."""
    import torch

    from synid_assets.core.generation.vec2face_model import Vec2FaceConfig, Vec2FaceGenerator

    torch.manual_seed(seed)
    model = Vec2FaceGenerator(config or Vec2FaceConfig())
    torch.nn.init.normal_(model.decoder_pos_embed_learned, std=0.02)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"model_vec2face": model.state_dict(), "epoch": 0}, path)
    return path


def build_tiny_vec2face(path: Path, seed: int = 0) -> Path:
    """The tiny checkpoint (about 1 MB); load it with num_heads = decoder_num_heads = TINY_HEADS."""
    return build_vec2face(path, tiny_vec2face_config(), seed)
