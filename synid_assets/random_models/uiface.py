"""A random-weight UIFace model, built from SynID's module classes and saved as upstream's files.

The directory holds what UIFace's loader reads: `checkpoints/uiface.ckpt`, here in the layout of upstream's
`ema_averaged_model_<step>.ckpt` (the DDPM's state dict: the UNet, with its learned `empty_context_embedding`,
under `eps_model.`, plus the schedule buffers) or, with `ddp=True`, of the DDP `model_<step>.ckpt` (every key under
`module.`), and the VQ decoder's `autoencoder/first_stage_decoder_state_dict.pt`. The tiny sizes are IDiff-Face's
tiny ones (512-d context, 128x128 output), so the real loading path and sampling run on them unchanged.
"""

from __future__ import annotations

from pathlib import Path

ATTENTION_STD = 0.2  # of the q and k projections (the rest: 0.05): attention logits of order 1, not uniform


def build_uiface(model_dir: Path, configs=None, seed: int = 0, ddp: bool = False) -> Path:
    """Save a random-weight UIFace UNet and VQ decoder (default: the released sizes) as upstream's files."""
    import torch

    from synid_assets.core.generation.idiff_face import DECODER_FILE
    from synid_assets.core.generation.idiff_face_model import DecoderConfig, UNetConfig, VQDecoderInterface
    from synid_assets.core.generation.uiface import CHECKPOINT_FILE
    from synid_assets.core.generation.uiface_model import UIFaceUNet
    from synid_assets.random_models.idiff_face import schedule_buffers

    unet_config, decoder_config = configs or (UNetConfig(), DecoderConfig())
    torch.manual_seed(seed)
    unet, decoder = UIFaceUNet(unet_config), VQDecoderInterface(decoder_config)
    for parameter in unet.parameters():  # upstream zero-initialises output convs: random weights make it do work
        torch.nn.init.normal_(parameter, std=0.05)
    for module in unet.modules():  # unit group norms, so signals (the context's among them) reach the output
        if isinstance(module, torch.nn.GroupNorm):
            torch.nn.init.ones_(module.weight)
            torch.nn.init.zeros_(module.bias)
    for name, parameter in unet.named_parameters():  # sharper attention, so the context and injection matter
        if name.endswith(("to_q.weight", "to_k.weight")):
            torch.nn.init.normal_(parameter, std=ATTENTION_STD)
    model_dir = Path(model_dir)
    for name in (CHECKPOINT_FILE, DECODER_FILE):
        (model_dir / name).parent.mkdir(parents=True, exist_ok=True)
    state = {**{f"eps_model.{k}": v for k, v in unet.state_dict().items()}, **schedule_buffers()}
    if ddp:
        state = {f"module.{k}": v for k, v in state.items()}
    torch.save(state, model_dir / CHECKPOINT_FILE)
    torch.save(decoder.state_dict(), model_dir / DECODER_FILE)
    return model_dir


def build_tiny_uiface(model_dir: Path, seed: int = 0, ddp: bool = False) -> Path:
    """The tiny model directory (well under 1 MB), with IDiff-Face's tiny sizes."""
    from synid_assets.random_models.idiff_face import tiny_configs

    return build_uiface(model_dir, tiny_configs(), seed, ddp)
