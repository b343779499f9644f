"""Vec2Face's fMAE generator network, written for SynID with the module and parameter names of the release.

Matched against github.com/HaiyuWu/Vec2Face @ 9d9fa8c50bab4562560ff78f4cbb8a738701d616
(`pixel_generator/vec2face/model_vec2face.py`: MaskedGenerativeEncoderViT, `vec2face_vit_base_patch16`;
`pixel_generator/vec2face/im_decoder.py`: Decoder; `configs/vec2face/vqgan.yaml`: its ddconfig), so a state_dict of
this module has the keys and shapes of `checkpoint["model_vec2face"]` in `weights/vec2face_generator.pth`.

The network: the identity vector is projected to the ViT width (`latent_prior_proj_f`), expanded to a 7x7 grid of
49 row tokens (`feature_token`, a Linear(1, 49) applied per channel), rows chosen by the mask are replaced by the
projected vector itself, a vector token is prepended, position embeddings and LayerNorm are added (`token_emb`), the
dropped rows are removed and the ViT encoder runs; the decoder pads the dropped and masked rows with the vector
token's output, adds learned positions and runs its ViT blocks; `im_decoder_proj` maps the 7x7 grid to the
convolutional decoder's latent, which upsamples 4 times to 112x112 RGB in [-1, 1].

Kept as published because the weights depend on them: LayerNorm eps 1e-6 in the ViT, attention in float32, the
decoder ResNet blocks' convolutions without bias and their channel shortcut applied to the block's output (not its
input). Training-only parts (`patch_embed`, `center_token`) are built so the released keys load, and unused.
Dropout is left out: the published generation runs in eval mode.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn
from torch.nn import functional as F  # noqa: N812

from synid_assets.core.errors import ModelLoadError

GRID = 7  # the 7x7 token grid (112 / 16): the image decoder's latent size
ROWS = GRID * GRID


@dataclass(frozen=True)
class Vec2FaceConfig:
    """Sizes of the generator; the defaults are the released `vec2face_vit_base_patch16` with the vqgan.yaml decoder."""

    rep_dim: int = 512
    embed_dim: int = 768
    depth: int = 12
    num_heads: int = 12
    decoder_embed_dim: int = 768
    decoder_depth: int = 8
    decoder_num_heads: int = 16
    mlp_ratio: float = 4.0
    patch_size: int = 16
    z_channels: int = 256
    level_channels: tuple[int, ...] = (128, 128, 256, 256, 512)  # ch 128 x ch_mult [1, 1, 2, 2, 4]
    num_res_blocks: int = 2


class Attention(nn.Module):
    def __init__(self, dim: int, num_heads: int) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.qkv = nn.Linear(dim, dim * 3, bias=True)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, tokens, width = x.shape
        qkv = self.qkv(x).reshape(batch, tokens, 3, self.num_heads, width // self.num_heads).permute(2, 0, 3, 1, 4)
        # Attention in float32 as published (its blocks run with autocast off).
        out = F.scaled_dot_product_attention(qkv[0].float(), qkv[1].float(), qkv[2].float())
        return self.proj(out.to(x.dtype).transpose(1, 2).reshape(batch, tokens, width))


class Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.gelu(self.fc1(x)))


class Block(nn.Module):
    def __init__(self, dim: int, num_heads: int, mlp_ratio: float) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = Attention(dim, num_heads)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class BertEmbeddings(nn.Module):
    """Learned positions of the vector token and the 49 row tokens, then LayerNorm."""

    def __init__(self, hidden_size: int, max_position_embeddings: int) -> None:
        super().__init__()
        self.position_embeddings = nn.Embedding(max_position_embeddings, hidden_size)
        self.LayerNorm = nn.LayerNorm(hidden_size, eps=1e-6)  # noqa: N815 (the released key name)
        self.register_buffer("position_ids", torch.arange(max_position_embeddings).expand((1, -1)))

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        positions = self.position_embeddings(self.position_ids[:, : tokens.shape[1]])
        return self.LayerNorm(tokens + positions)


class PatchEmbed(nn.Module):
    """Only its weights: the released generator carries the training-time patch projection."""

    def __init__(self, patch_size: int, embed_dim: int) -> None:
        super().__init__()
        self.proj = nn.Conv2d(3, embed_dim, kernel_size=patch_size, stride=patch_size)


def _group_norm(channels: int) -> nn.GroupNorm:
    return nn.GroupNorm(num_groups=32, num_channels=channels, eps=1e-6, affine=True)


class ResnetBlock(nn.Module):
    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.in_channels, self.out_channels = in_channels, out_channels
        self.norm1 = _group_norm(in_channels)
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False)
        self.norm2 = _group_norm(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False)
        if in_channels != out_channels:
            self.nin_shortcut = nn.Conv2d(out_channels, out_channels, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        h = self.conv2(F.silu(self.norm2(h)))
        if self.in_channels != self.out_channels:
            x = self.nin_shortcut(h)  # as released: the shortcut reads the block's output
        return x + h


class Upsample(nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


class Decoder(nn.Module):
    """The convolutional image decoder (taming's VQGAN decoder without attention or timestep embedding)."""

    def __init__(self, z_channels: int, level_channels: Sequence[int], num_res_blocks: int, out_channels: int = 3):
        super().__init__()
        levels = len(level_channels)
        block_in = level_channels[-1]
        self.conv_in = nn.Conv2d(z_channels, block_in, 3, padding=1)
        self.mid = nn.Module()
        self.mid.block_1 = ResnetBlock(block_in, block_in)
        self.mid.block_2 = ResnetBlock(block_in, block_in)
        ups: list[nn.Module] = []
        for level in reversed(range(levels)):
            up = nn.Module()
            blocks = []
            for _ in range(num_res_blocks):
                blocks.append(ResnetBlock(block_in, level_channels[level]))
                block_in = level_channels[level]
            up.block = nn.ModuleList(blocks)
            if level != 0:
                up.upsample = Upsample(block_in)
            ups.insert(0, up)
        self.up = nn.ModuleList(ups)
        self.norm_out = _group_norm(block_in)
        self.conv_out = nn.Conv2d(block_in, out_channels, 3, padding=1)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        h = self.mid.block_2(self.mid.block_1(self.conv_in(z)))
        for level in reversed(range(len(self.up))):
            for block in self.up[level].block:
                h = block(h)
            if level != 0:
                h = self.up[level].upsample(h)
        return self.conv_out(F.silu(self.norm_out(h)))


class Vec2FaceGenerator(nn.Module):
    """The fMAE generator: identity vectors [n, rep_dim] and row masks -> images [n, 3, 112, 112] in [-1, 1]."""

    def __init__(self, config: Vec2FaceConfig = Vec2FaceConfig()) -> None:  # noqa: B008 (frozen dataclass)
        super().__init__()
        c = config
        self.config = config
        self.token_emb = BertEmbeddings(c.embed_dim, ROWS + 1)
        self.latent_prior_proj_f = nn.Linear(c.rep_dim, c.embed_dim, bias=True)
        self.feature_token = nn.Linear(1, ROWS, bias=True)
        self.center_token = nn.Linear(c.embed_dim, ROWS, bias=True)
        self.im_decoder = Decoder(c.z_channels, c.level_channels, c.num_res_blocks)
        self.im_decoder_proj = nn.Linear(c.embed_dim, c.z_channels)
        self.patch_embed = PatchEmbed(c.patch_size, c.embed_dim)
        self.blocks = nn.ModuleList([Block(c.embed_dim, c.num_heads, c.mlp_ratio) for _ in range(c.depth)])
        self.norm = nn.LayerNorm(c.embed_dim, eps=1e-6)
        self.decoder_embed = nn.Linear(c.embed_dim, c.decoder_embed_dim, bias=True)
        self.decoder_pos_embed_learned = nn.Parameter(torch.zeros(1, ROWS + 1, c.decoder_embed_dim))
        self.decoder_blocks = nn.ModuleList(
            [Block(c.decoder_embed_dim, c.decoder_num_heads, c.mlp_ratio) for _ in range(c.decoder_depth)]
        )
        self.decoder_norm = nn.LayerNorm(c.decoder_embed_dim, eps=1e-6)

    def forward(self, rep: torch.Tensor, drop_rows: torch.Tensor, masked_rows: torch.Tensor) -> torch.Tensor:
        """rep [n, rep_dim]; drop_rows and masked_rows [n, 49] bool, the same number of dropped rows in each image
        and every dropped row also masked (as the published masking draws them)."""
        x, keep, masked = self.encode(rep, drop_rows, masked_rows)
        return self.decode(self.decoder_embed(x), keep, masked)

    def encode(
        self, rep: torch.Tensor, drop_rows: torch.Tensor, masked_rows: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The encoder's normed output over the kept tokens, and the keep and mask flags of all 50 tokens."""
        batch = rep.shape[0]
        vector = self.latent_prior_proj_f(rep)
        rows = self.feature_token(vector.unsqueeze(-1)).permute(0, 2, 1)
        rows = torch.where(masked_rows.unsqueeze(-1), vector.unsqueeze(1).expand_as(rows), rows)
        tokens = self.token_emb(torch.cat([vector.unsqueeze(1), rows], dim=1))
        no_row = torch.zeros(batch, 1, dtype=torch.bool, device=rep.device)
        keep = ~torch.cat([no_row, drop_rows], dim=1)
        masked = torch.cat([no_row, masked_rows], dim=1)
        x = tokens[keep].reshape(batch, -1, tokens.shape[-1])
        for block in self.blocks:
            x = block(x)
        return self.norm(x), keep, masked

    def decode(
        self, x: torch.Tensor, keep: torch.Tensor, masked: torch.Tensor, pad_token: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Images from decoder-width tokens: dropped and masked rows take `pad_token` [n, 1, width] when given
        (Vec2Face+'s pose token), else the vector token's output, as published."""
        batch = x.shape[0]
        pad = (x[:, 0:1] if pad_token is None else pad_token.to(x.dtype)).expand(-1, ROWS + 1, -1)
        padded = pad.clone()
        padded[keep] = x.reshape(-1, x.shape[-1])
        padded = torch.where(masked.unsqueeze(-1), pad, padded)
        x = padded + self.decoder_pos_embed_learned
        for block in self.decoder_blocks:
            x = block(x)
        x = self.decoder_norm(x)
        grid = self.im_decoder_proj(x[:, 1:].reshape(batch, GRID, GRID, -1)).permute(0, 3, 1, 2)
        return self.im_decoder(grid)

def config_from_state_dict(state: dict[str, torch.Tensor], num_heads: int, decoder_num_heads: int) -> Vec2FaceConfig:
    """The sizes a released-layout state_dict was built with (head counts are not in the shapes: given)."""

    def count(prefix: str) -> int:
        return len({key[len(prefix):].split(".")[0] for key in state if key.startswith(prefix)})

    embed_dim, rep_dim = state["latent_prior_proj_f.weight"].shape
    levels = count("im_decoder.up.")
    return Vec2FaceConfig(
        rep_dim=int(rep_dim),
        embed_dim=int(embed_dim),
        depth=count("blocks."),
        num_heads=num_heads,
        decoder_embed_dim=int(state["decoder_embed.weight"].shape[0]),
        decoder_depth=count("decoder_blocks."),
        decoder_num_heads=decoder_num_heads,
        mlp_ratio=state["blocks.0.mlp.fc1.weight"].shape[0] / embed_dim,
        patch_size=int(state["patch_embed.proj.weight"].shape[-1]),
        z_channels=int(state["im_decoder_proj.weight"].shape[0]),
        level_channels=tuple(int(state[f"im_decoder.up.{i}.block.0.conv1.weight"].shape[0]) for i in range(levels)),
        num_res_blocks=count("im_decoder.up.0.block."),
    )


def read_checkpoint_dict(path: Path, what: str) -> dict:
    """The dict a Vec2Face(+) checkpoint holds; a missing or unreadable file is one line naming it."""
    import argparse

    if not path.is_file():
        raise ModelLoadError(f"{what} checkpoint {str(path)!r} does not exist")
    try:  # training checkpoints also pickle their argparse Namespace: allow only that class
        with torch.serialization.safe_globals([argparse.Namespace]):
            raw = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:
        reason = f"{type(error).__name__}: {error}"
        raise ModelLoadError(f"{what} checkpoint {str(path)!r} could not be read: {reason}") from error
    if not isinstance(raw, dict):
        raise ModelLoadError(f"{what} checkpoint {str(path)!r} holds no dict of state_dicts")
    return raw
