"""IDiff-Face's networks in the released key layout: the conditional UNet (cross-attention on the projected identity
context) and the CompVis VQ decoder of the FFHQ-256 LDM autoencoder.

Matched against fdbtrs/IDiff-Face @ 8b3936935710dc78519933f905b14bd60ff9cb26: `models/diffusion/unet.py`
(ConditionalUNet, condition_type "CA"), `models/diffusion/nn.py` (SpatialEmbeddingCrossAttentionBlock,
MultiHeadAttention), `models/autoencoder/modules.py` (Decoder) and `models/autoencoder/vqgan.py`
(VQDecoderInterface: quantize, post_quant_conv, decoder). Module and parameter names are upstream's, so the released
state dicts load with strict key and shape checking; the sizes are read back from the weights' shapes.
torch is imported with this module: import it only from loading code.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn


@dataclass(frozen=True)
class UNetConfig:
    """ConditionalUNet's sizes; the defaults are `configs/model/unet_cond_ca_cpd25.yaml` (216M parameters)."""

    input_channels: int = 3
    initial_channels: int = 96
    channel_multipliers: tuple[int, ...] = (1, 2, 2, 2)
    is_attention: tuple[bool, ...] = (False, True, True, True)
    attention_head_channels: int = 32
    n_blocks_per_resolution: int = 2
    context_input_channels: int = 512
    context_channels: int = 256


@dataclass(frozen=True)
class DecoderConfig:
    """The VQ decoder's sizes; the defaults are `models/autoencoder/first_stage_config.yaml` (f4, 3-channel latent)."""

    ch: int = 128
    ch_mult: tuple[int, ...] = (1, 2, 4)
    num_res_blocks: int = 2
    z_channels: int = 3
    embed_dim: int = 3
    n_embed: int = 8192
    out_ch: int = 3


# ---------------------------------------------------------------- UNet (models/diffusion/unet.py, nn.py)


class SinusoidalTimeEmbedding(nn.Module):
    def __init__(self, n_channels: int, max_period: int = 10000) -> None:
        super().__init__()
        self.half, self.max_period = n_channels // 8, max_period  # frequencies: float32, not in the state dict
        self.lin1 = nn.Linear(n_channels // 4, n_channels)
        self.act = nn.SiLU()
        self.lin2 = nn.Linear(n_channels, n_channels)

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        frequencies = torch.exp(-math.log(self.max_period) * torch.arange(self.half, device=t.device) / self.half)
        args = t[:, None].float() * frequencies[None]
        emb = torch.cat([torch.cos(args), torch.sin(args)], dim=-1).to(self.lin1.weight.dtype)
        return self.lin2(self.act(self.lin1(emb)))


class AdaptiveGroupNormalization(nn.Module):
    def __init__(self, n_groups: int, n_channels: int) -> None:
        super().__init__()
        self.norm = nn.GroupNorm(n_groups, n_channels)

    def forward(self, x: torch.Tensor, scale: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
        return (1 + scale) * self.norm(x) + shift


class ResidualBlock(nn.Module):
    """Upstream's ResidualBlock with condition_type 'CA': AdaGN on the time embedding only."""

    def __init__(self, in_channels: int, out_channels: int, time_channels: int) -> None:
        super().__init__()
        self.norm1 = nn.GroupNorm(32, in_channels)
        self.act1 = nn.SiLU()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, padding=1)
        self.time_emb = nn.Sequential(nn.SiLU(), nn.Linear(time_channels, out_channels))
        self.scale_emb = nn.Linear(out_channels, out_channels)
        self.shift_emb = nn.Linear(out_channels, out_channels)
        self.norm2 = AdaptiveGroupNormalization(32, out_channels)
        self.act2 = nn.SiLU()
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1)
        self.shortcut = nn.Conv2d(in_channels, out_channels, 1) if in_channels != out_channels else nn.Identity()

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        h = self.conv1(self.act1(self.norm1(x)))
        emb = self.time_emb(t)
        h = self.norm2(h, scale=self.scale_emb(emb)[:, :, None, None], shift=self.shift_emb(emb)[:, :, None, None])
        return self.conv2(self.act2(h)) + self.shortcut(x)


class MultiHeadAttention(nn.Module):
    def __init__(self, in_channels: int, key_value_channels: int | None, n_heads: int, head_channels: int) -> None:
        super().__init__()
        self.n_heads = n_heads
        inner = n_heads * head_channels
        key_value_channels = key_value_channels or in_channels
        self.to_q = nn.Conv1d(in_channels, inner, 1)
        self.to_k = nn.Conv1d(key_value_channels, inner, 1)
        self.to_v = nn.Conv1d(key_value_channels, inner, 1)
        self.proj_out = nn.Conv1d(inner, in_channels, 1)
        # diffusers-style hook: processor(module, logits) -> logits, called on the pre-softmax attention logits
        # [batch * heads, queries, keys] (UIFace records and injects them); None leaves the block as upstream's.
        self.processor: Callable[[MultiHeadAttention, torch.Tensor], torch.Tensor] | None = None

    def forward(self, x: torch.Tensor, c: torch.Tensor | None = None) -> torch.Tensor:
        c = x if c is None else c
        q, k, v = self.to_q(x), self.to_k(c), self.to_v(c)
        b, width, lq = q.shape
        heads = self.n_heads
        q, k, v = (z.reshape(b * heads, width // heads, z.shape[-1]) for z in (q, k, v))
        scale = 1 / math.sqrt(math.sqrt(width // heads))
        weight = torch.einsum("bct,bcs->bts", q * scale, k * scale)
        if self.processor is not None:
            weight = self.processor(self, weight)
        weight = torch.softmax(weight.float(), dim=-1).type(weight.dtype)
        a = torch.einsum("bts,bcs->bct", weight, v).reshape(b, width, lq)
        return self.proj_out(a)


class SpatialEmbeddingCrossAttentionBlock(nn.Module):
    """Self-attention on the feature map, then cross-attention on the context expanded to `head_channels` tokens."""

    def __init__(self, in_channels: int, context_dim: int, n_heads: int, head_channels: int) -> None:
        super().__init__()
        self.context_dim = context_dim
        inner = n_heads * head_channels
        self.x_proj_in = nn.Conv2d(in_channels, inner, 1)
        self.x_proj_out = nn.Conv2d(inner, in_channels, 1)
        self.self_attention = MultiHeadAttention(inner, None, n_heads, head_channels)
        self.c_proj_in = nn.Linear(context_dim, context_dim * head_channels)
        self.cross_attention = MultiHeadAttention(inner, context_dim, n_heads, head_channels)
        self.x_norm = nn.GroupNorm(32, inner)
        self.c_norm = nn.GroupNorm(32, context_dim)
        self.ff = nn.Sequential(nn.Linear(inner, inner * 4), nn.GELU(), nn.Linear(inner * 4, inner))

    def forward(self, x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        b, _, h, w = x.shape
        x_in = x
        x = self.x_proj_in(x).flatten(2)
        c = self.c_norm(self.c_proj_in(c).reshape(b, self.context_dim, -1))
        x = self.self_attention(self.x_norm(x)) + x
        x = self.cross_attention(self.x_norm(x), c) + x
        x = self.ff(self.x_norm(x).transpose(1, 2)).transpose(1, 2) + x
        return self.x_proj_out(x.reshape(b, -1, h, w)) + x_in


class ResAttnBlock(nn.Module):
    """DownBlock / UpBlock / MiddleBlock's parts: `res` then optional `attn` (upstream names)."""

    def __init__(self, cin: int, cout: int, time_channels: int, attention: bool, config: UNetConfig) -> None:
        super().__init__()
        self.res = ResidualBlock(cin, cout, time_channels)
        self.has_attention = attention
        if attention:
            heads = cout // config.attention_head_channels  # attention_heads: -1 in the released config
            self.attn = SpatialEmbeddingCrossAttentionBlock(cout, config.context_channels, heads,
                                                            config.attention_head_channels)

    def forward(self, x: torch.Tensor, t: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        x = self.res(x, t)
        return self.attn(x, c) if self.has_attention else x


class MiddleBlock(nn.Module):
    def __init__(self, n_channels: int, time_channels: int, config: UNetConfig) -> None:
        super().__init__()
        self.res1 = ResidualBlock(n_channels, n_channels, time_channels)
        self.attn = SpatialEmbeddingCrossAttentionBlock(n_channels, config.context_channels,
                                                        n_channels // config.attention_head_channels,
                                                        config.attention_head_channels)
        self.res2 = ResidualBlock(n_channels, n_channels, time_channels)

    def forward(self, x: torch.Tensor, t: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        return self.res2(self.attn(self.res1(x, t), c), t)


class Resample(nn.Module):
    def __init__(self, n_channels: int, up: bool) -> None:
        super().__init__()
        self.up = up
        self.conv = (nn.ConvTranspose2d(n_channels, n_channels, 4, 2, 1) if up
                     else nn.Conv2d(n_channels, n_channels, 3, 2, 1))

    def forward(self, x: torch.Tensor, t: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


class ConditionalUNet(nn.Module):
    """ConditionalUNet(condition_type='CA', is_context_conditional=True, n_context_classes=0)."""

    def __init__(self, config: UNetConfig) -> None:
        super().__init__()
        init, mults = config.initial_channels, config.channel_multipliers
        time_channels = init * 4
        self.image_proj = nn.Conv2d(config.input_channels, init, 3, padding=1)
        self.time_emb = SinusoidalTimeEmbedding(time_channels)
        self.context_emb = nn.Linear(config.context_input_channels, config.context_channels)
        down: list[nn.Module] = []
        cin = cout = init
        for i, mult in enumerate(mults):
            cout = cin * mult
            for _ in range(config.n_blocks_per_resolution):
                down.append(ResAttnBlock(cin, cout, time_channels, config.is_attention[i], config))
                cin = cout
            if i < len(mults) - 1:
                down.append(Resample(cin, up=False))
        self.down = nn.ModuleList(down)
        self.middle = MiddleBlock(cout, time_channels, config)
        up: list[nn.Module] = []
        cin = cout
        for i in reversed(range(len(mults))):
            for _ in range(config.n_blocks_per_resolution):
                up.append(ResAttnBlock(cin + cin, cin, time_channels, config.is_attention[i], config))
            cout = cin // mults[i]
            up.append(ResAttnBlock(cin + cout, cout, time_channels, config.is_attention[i], config))
            cin = cout
            if i > 0:
                up.append(Resample(cin, up=True))
        self.up = nn.ModuleList(up)
        self.norm = nn.GroupNorm(32, init)
        self.act = nn.SiLU()
        self.final = nn.Conv2d(cin, config.input_channels, 3, padding=1)

    def forward(self, x: torch.Tensor, t: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        """Predicted noise for latents x at timesteps t; context is the raw 512-d identity vector (no dropout)."""
        return self.denoise(x, t, self.context_emb(context))

    def denoise(self, x: torch.Tensor, t: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        """Predicted noise given the projected context c [batch, context_channels] (UIFace swaps in its empty one)."""
        t = self.time_emb(t)
        x = self.image_proj(x)
        skips = [x]
        for block in self.down:
            x = block(x, t, c)
            skips.append(x)
        x = self.middle(x, t, c)
        for block in self.up:
            x = block(x, t, c) if isinstance(block, Resample) else block(torch.cat((x, skips.pop()), dim=1), t, c)
        return self.final(self.act(self.norm(x)))


def unet_config_from_state_dict(state: dict[str, torch.Tensor]) -> UNetConfig:
    """The UNet's sizes from the shapes of its weights (prefix 'eps_model.' removed)."""
    proj = state["image_proj.weight"]
    init = int(proj.shape[0])
    context = state["context_emb.weight"]
    indices = sorted({int(k.split(".")[1]) for k in state if k.startswith("down.")})
    channels: list[int] = [init]
    attention: list[bool] = []
    blocks = [0]
    for i in indices:
        if f"down.{i}.conv.weight" in state:  # a Downsample closes the resolution
            blocks.append(0)
            continue
        if blocks[-1] == 0:
            channels.append(int(state[f"down.{i}.res.conv1.weight"].shape[0]))
            attention.append(f"down.{i}.attn.x_proj_in.weight" in state)
        blocks[-1] += 1
    head_channels = int(state["middle.attn.c_proj_in.weight"].shape[0]) // int(context.shape[0])
    return UNetConfig(
        input_channels=int(proj.shape[1]), initial_channels=init,
        channel_multipliers=tuple(channels[k + 1] // channels[k] for k in range(len(channels) - 1)),
        is_attention=tuple(attention), attention_head_channels=head_channels, n_blocks_per_resolution=blocks[0],
        context_input_channels=int(context.shape[1]), context_channels=int(context.shape[0]))


# ---------------------------------------------------------------- VQ decoder (models/autoencoder/*.py)


def _normalize(channels: int) -> nn.GroupNorm:
    return nn.GroupNorm(32, channels, eps=1e-6, affine=True)


class ResnetBlock(nn.Module):
    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.norm1 = _normalize(in_channels)
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, padding=1)
        self.norm2 = _normalize(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1)
        if in_channels != out_channels:
            self.nin_shortcut = nn.Conv2d(in_channels, out_channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv2(nn.functional.silu(self.norm2(self.conv1(nn.functional.silu(self.norm1(x))))))
        return (self.nin_shortcut(x) if hasattr(self, "nin_shortcut") else x) + h


class SelfAttentionBlock(nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()
        self.norm = _normalize(channels)
        self.q, self.k, self.v, self.proj_out = (nn.Conv2d(channels, channels, 1) for _ in range(4))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.norm(x)
        b, c, hh, ww = h.shape
        q, k, v = self.q(h).flatten(2), self.k(h).flatten(2), self.v(h).flatten(2)
        w = torch.softmax(torch.bmm(q.transpose(1, 2), k) * (c ** -0.5), dim=2)
        return x + self.proj_out(torch.bmm(v, w.transpose(1, 2)).reshape(b, c, hh, ww))


class Upsample(nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(nn.functional.interpolate(x, scale_factor=2.0, mode="nearest"))


class Decoder(nn.Module):
    """CompVis Decoder with attn_resolutions = [] (the FFHQ-256 LDM first stage)."""

    def __init__(self, config: DecoderConfig) -> None:
        super().__init__()
        block_in = config.ch * config.ch_mult[-1]
        self.conv_in = nn.Conv2d(config.z_channels, block_in, 3, padding=1)
        self.mid = nn.Module()
        self.mid.block_1 = ResnetBlock(block_in, block_in)
        self.mid.attn_1 = SelfAttentionBlock(block_in)
        self.mid.block_2 = ResnetBlock(block_in, block_in)
        levels: list[nn.Module] = []
        for i_level in reversed(range(len(config.ch_mult))):
            level = nn.Module()
            blocks = []
            for _ in range(config.num_res_blocks + 1):
                blocks.append(ResnetBlock(block_in, config.ch * config.ch_mult[i_level]))
                block_in = config.ch * config.ch_mult[i_level]
            level.block = nn.ModuleList(blocks)
            level.attn = nn.ModuleList()
            if i_level != 0:
                level.upsample = Upsample(block_in)
            levels.insert(0, level)
        self.up = nn.ModuleList(levels)
        self.norm_out = _normalize(block_in)
        self.conv_out = nn.Conv2d(block_in, config.out_ch, 3, padding=1)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        h = self.mid.block_2(self.mid.attn_1(self.mid.block_1(self.conv_in(z))))
        for i_level in reversed(range(len(self.up))):
            for block in self.up[i_level].block:
                h = block(h)
            if i_level != 0:
                h = self.up[i_level].upsample(h)
        return self.conv_out(nn.functional.silu(self.norm_out(h)))


class VectorQuantizer(nn.Module):
    def __init__(self, n_embed: int, embed_dim: int) -> None:
        super().__init__()
        self.embedding = nn.Embedding(n_embed, embed_dim)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        """Each latent pixel replaced by its nearest codebook entry (upstream's VectorQuantizer2 at inference)."""
        b, c, h, w = z.shape
        flat = z.permute(0, 2, 3, 1).reshape(-1, c)
        weight = self.embedding.weight
        d = flat.pow(2).sum(1, keepdim=True) + weight.pow(2).sum(1) - 2 * flat @ weight.t()
        return self.embedding(d.argmin(1)).reshape(b, h, w, c).permute(0, 3, 1, 2)


class VQDecoderInterface(nn.Module):
    """Upstream's VQDecoderInterface: quantize, post_quant_conv, decoder (the released decoder state dict)."""

    def __init__(self, config: DecoderConfig) -> None:
        super().__init__()
        self.decoder = Decoder(config)
        self.quantize = VectorQuantizer(config.n_embed, config.embed_dim)
        self.post_quant_conv = nn.Conv2d(config.embed_dim, config.z_channels, 1)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.post_quant_conv(self.quantize(h)))


def decoder_config_from_state_dict(state: dict[str, torch.Tensor]) -> DecoderConfig:
    """The decoder's sizes from the shapes of its weights (ch_mult[0] = 1, as in every CompVis first stage)."""
    levels = sorted({int(k.split(".")[2]) for k in state if k.startswith("decoder.up.")})
    outs = [int(state[f"decoder.up.{i}.block.0.conv1.weight"].shape[0]) for i in levels]
    blocks = {int(k.split(".")[4]) for k in state if k.startswith("decoder.up.0.block.")}
    codebook = state["quantize.embedding.weight"]
    return DecoderConfig(ch=outs[0], ch_mult=tuple(o // outs[0] for o in outs), num_res_blocks=len(blocks) - 1,
                         z_channels=int(state["post_quant_conv.weight"].shape[0]), embed_dim=int(codebook.shape[1]),
                         n_embed=int(codebook.shape[0]), out_ch=int(state["decoder.conv_out.weight"].shape[0]))
