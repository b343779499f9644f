"""A tiny Arc2Face with random weights, built locally (no download), for tests of the Arc2Face backend.

Two directories in the real layouts: an Arc2Face repo (`arc2face/` UNet2DConditionModel, `encoder/` CLIPTextModel)
and an SD1.5 base repo (`vae/` AutoencoderKL, `tokenizer/` CLIPTokenizer, `scheduler/` SD1.5's PNDM config). The text
width is 544 (> 512, so the zero-padding of the ArcFace vector is exercised) and the UNet attends to it.
"""

from __future__ import annotations

from pathlib import Path

TEXT_WIDTH = 544
MAX_LENGTH = 77
WORDS = ["photo of a id person", "a photo of a person", "id"]


def build_tiny_clip_tokenizer():
    """A CLIP BPE tokenizer in which "photo", "of", "a", "id", "person" are single tokens; the same ids every time.

    The vocabulary is written out, not trained (BPE training breaks ties in hash order, so its ids vary between
    processes): the two special tokens, every lowercase letter alone and word-final ("a", "a</w>"), then each word
    built left to right by one merge per letter. The `tokenizers` library's BPE model checks the merges resolve.
    """
    import string

    from tokenizers import Tokenizer, models
    from transformers import CLIPTokenizer

    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    for letter in string.ascii_lowercase:
        vocab[letter] = len(vocab)
        vocab[letter + "</w>"] = len(vocab)
    merges: list[tuple[str, str]] = []
    for word in sorted({w for line in WORDS for w in line.split()}):
        prefix = word[0]
        for index, letter in enumerate(word[1:], start=1):
            piece = letter + "</w>" if index == len(word) - 1 else letter
            if (prefix, piece) not in merges:
                merges.append((prefix, piece))
            prefix += piece
            vocab.setdefault(prefix, len(vocab))
    tokenizer = CLIPTokenizer(vocab=vocab, merges=merges, model_max_length=MAX_LENGTH)
    # The BPE model itself must turn every word into its one token.
    bpe = Tokenizer(models.BPE(vocab=vocab, merges=merges, unk_token="<|endoftext|>", end_of_word_suffix="</w>"))
    for word in {w for line in WORDS for w in line.split()}:
        assert [t.value for t in bpe.model.tokenize(word)] == [word + "</w>"], word
        assert len(tokenizer.encode(word, add_special_tokens=False)) == 1, word
    return tokenizer


TINY_UNET = {
    "sample_size": 16,
    "in_channels": 4,
    "out_channels": 4,
    "block_out_channels": (8, 16),
    "layers_per_block": 1,
    "down_block_types": ("CrossAttnDownBlock2D", "DownBlock2D"),
    "up_block_types": ("UpBlock2D", "CrossAttnUpBlock2D"),
    "cross_attention_dim": TEXT_WIDTH,
    "attention_head_dim": 4,
    "norm_num_groups": 4,
}
TINY_TEXT = {"hidden_size": TEXT_WIDTH, "intermediate_size": 64, "num_attention_heads": 4, "num_hidden_layers": 2}
TINY_VAE = {
    "down_block_types": ("DownEncoderBlock2D", "DownEncoderBlock2D"),
    "up_block_types": ("UpDecoderBlock2D", "UpDecoderBlock2D"),
    "block_out_channels": (8, 8),
    "layers_per_block": 1,
    "latent_channels": 4,
    "norm_num_groups": 4,
    "sample_size": 32,
}
# Stable Diffusion v1.5's architecture (the sizes of Arc2Face's UNet, CLIP ViT-L/14 text encoder and VAE).
SD15_UNET = {
    "sample_size": 64,
    "in_channels": 4,
    "out_channels": 4,
    "block_out_channels": (320, 640, 1280, 1280),
    "layers_per_block": 2,
    "down_block_types": ("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
    "up_block_types": ("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
    "cross_attention_dim": 768,
    "attention_head_dim": 8,
    "norm_num_groups": 32,
}
SD15_TEXT = {"hidden_size": 768, "intermediate_size": 3072, "num_attention_heads": 12, "num_hidden_layers": 12}
SD15_VAE = {
    "down_block_types": ("DownEncoderBlock2D",) * 4,
    "up_block_types": ("UpDecoderBlock2D",) * 4,
    "block_out_channels": (128, 256, 512, 512),
    "layers_per_block": 2,
    "latent_channels": 4,
    "norm_num_groups": 32,
    "sample_size": 512,
}


def build_arc2face(root: Path, unet_config: dict, text_config: dict, vae_config: dict, device: str = "cpu",
                   dtype=None) -> tuple[Path, Path, object]:  # fmt: skip
    """Random-weight Arc2Face + SD1.5-base directories of the given architecture; returns (arc, base, unet).

    Weights are drawn after torch.manual_seed(0) on `device` and saved in `dtype` (default float32).
    """
    import torch
    from diffusers import AutoencoderKL, PNDMScheduler, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    root = Path(root)
    arc_dir, base_dir = root / "arc2face", root / "sd15"
    tokenizer = build_tiny_clip_tokenizer()
    torch.manual_seed(0)
    with torch.device(device):
        unet = UNet2DConditionModel(**unet_config)
        encoder = CLIPTextModel(
            CLIPTextConfig(
                vocab_size=len(tokenizer),
                max_position_embeddings=MAX_LENGTH,
                bos_token_id=tokenizer.bos_token_id,
                eos_token_id=tokenizer.eos_token_id,
                pad_token_id=tokenizer.pad_token_id,
                hidden_act="quick_gelu",
                projection_dim=text_config["hidden_size"],
                **text_config,
            )
        )
        vae = AutoencoderKL(in_channels=3, out_channels=3, **vae_config)
    # Stable Diffusion v1.5's own scheduler config (PNDM); the generator derives DPM-Solver / LCM from it.
    scheduler = PNDMScheduler(
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        num_train_timesteps=1000,
        set_alpha_to_one=False,
        skip_prk_steps=True,
        steps_offset=1,
    )
    if dtype is not None and dtype != torch.float32:
        unet, encoder, vae = unet.to(dtype), encoder.to(dtype), vae.to(dtype)
    unet.save_pretrained(arc_dir / "arc2face")
    encoder.save_pretrained(arc_dir / "encoder")
    vae.save_pretrained(base_dir / "vae")
    tokenizer.save_pretrained(base_dir / "tokenizer")
    scheduler.save_pretrained(base_dir / "scheduler")
    return arc_dir, base_dir, unet


def build_tiny_arc2face(root: Path) -> tuple[Path, Path]:
    """Build (arc2face_dir, base_dir) under root with torch.manual_seed(0) random weights; returns both paths."""
    arc_dir, base_dir, _ = build_arc2face(root, TINY_UNET, TINY_TEXT, TINY_VAE)
    return arc_dir, base_dir


def save_random_lora(unet, directory: Path, rank: int = 4, std: float = 0.5) -> Path:
    """Add a random (non-zero) LoRA to unet's attention projections and save it in diffusers' SD LoRA format.

    The LoRA's keys and shapes depend only on the UNet's architecture, so it loads into any UNet of that config.
    """
    import torch
    from diffusers import StableDiffusionPipeline
    from peft import LoraConfig, get_peft_model_state_dict

    torch.manual_seed(1)
    targets = ["to_q", "to_k", "to_v", "to_out.0"]
    unet.add_adapter(LoraConfig(r=rank, lora_alpha=rank, target_modules=targets, init_lora_weights=False))
    with torch.no_grad():
        for name, param in unet.named_parameters():
            if "lora_" in name:
                param.normal_(0.0, std)
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    StableDiffusionPipeline.save_lora_weights(directory, unet_lora_layers=get_peft_model_state_dict(unet))
    return directory


def build_tiny_lcm_lora(arc_dir: Path, directory: Path, rank: int = 4) -> Path:
    """A random LoRA for the tiny UNet in arc_dir, large enough to change a 32x32 image visibly."""
    from diffusers import UNet2DConditionModel

    return save_random_lora(UNet2DConditionModel.from_pretrained(arc_dir, subfolder="arc2face"), directory, rank)
