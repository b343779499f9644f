"""A tiny random-weight IDiff-Face model, built from SynID's module classes and saved in the released layout.

The directory is what upstream's files are: `checkpoints/ema_averaged_model.ckpt` (the EMA DDPM's state dict: the UNet
under `eps_model.` and the schedule buffers) and `autoencoder/first_stage_decoder_state_dict.pt` (the VQ decoder's
state dict). Only the sizes are reduced: the 512-d context and the 128x128 output (a 3-level decoder on a 32x32
latent) stay, so the real loading path and sampling run on it unchanged.
"""

from __future__ import annotations

from pathlib import Path


def tiny_configs():
    from synid_assets.core.generation.idiff_face_model import DecoderConfig, UNetConfig

    unet = UNetConfig(initial_channels=32, channel_multipliers=(1, 2), is_attention=(False, True),
                      n_blocks_per_resolution=1, context_channels=32)
    return unet, DecoderConfig(ch=32, ch_mult=(1, 1, 2), num_res_blocks=0, n_embed=64)


def schedule_buffers():
    """Upstream's `precompute_schedule_constants` for T = 1000 linear betas (saved with the EMA model)."""
    import torch

    betas = torch.linspace(1e-4, 0.02, 1000, dtype=torch.float32)
    alphas = 1 - betas
    alpha_bars = torch.cumsum(torch.log(alphas), dim=0).exp()
    return {"betas": betas, "alphas": alphas, "sigmas": betas.sqrt(), "sqrt_alphas_inv": 1 / alphas.sqrt(),
            "alpha_bars": alpha_bars, "sqrt_alpha_bars": alpha_bars.sqrt(),
            "sqrt_one_minus_alpha_bars": (1 - alpha_bars).sqrt(),
            "one_minus_alphas_over_sqrt_one_minus_alpha_bars": (1 - alphas) / (1 - alpha_bars).sqrt()}


def build_idiff_face(model_dir: Path, configs=None, seed: int = 0) -> Path:
    """Save a random-weight UNet and decoder (default: the released sizes) as upstream's two files."""
    import torch

    from synid_assets.core.generation.idiff_face import CHECKPOINT_FILE, DECODER_FILE
    from synid_assets.core.generation.idiff_face_model import (
        ConditionalUNet,
        DecoderConfig,
        UNetConfig,
        VQDecoderInterface,
    )

    unet_config, decoder_config = configs or (UNetConfig(), DecoderConfig())
    torch.manual_seed(seed)
    unet, decoder = ConditionalUNet(unet_config), VQDecoderInterface(decoder_config)
    for parameter in unet.parameters():  # upstream zero-initialises output convs: random weights make it do work
        torch.nn.init.normal_(parameter, std=0.05)
    model_dir = Path(model_dir)
    for name in (CHECKPOINT_FILE, DECODER_FILE):
        (model_dir / name).parent.mkdir(parents=True, exist_ok=True)
    state = {f"eps_model.{k}": v for k, v in unet.state_dict().items()}
    torch.save({**state, **schedule_buffers()}, model_dir / CHECKPOINT_FILE)
    torch.save(decoder.state_dict(), model_dir / DECODER_FILE)
    return model_dir


def build_tiny_idiff_face(model_dir: Path, seed: int = 0) -> Path:
    """The tiny model directory (well under 1 MB)."""
    return build_idiff_face(model_dir, tiny_configs(), seed)
