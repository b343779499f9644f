"""A tiny FluxPipeline with random weights, built locally (no download), for tests of the FLUX backend.

Every component is FLUX's real class (FluxTransformer2DModel, AutoencoderKL, FlowMatchEulerDiscreteScheduler,
CLIPTextModel + CLIPTokenizer, T5EncoderModel + T5Tokenizer), only tiny. The tokenizers are built here with the
`tokenizers` library from the words the template prompt writer and the shipped attribute files use.
"""

from __future__ import annotations

import json
import math
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from synid_assets.core.config.profiles import REPO_ROOT as REPO

CLIP_MAX_LENGTH = 77
HIDDEN = 32  # CLIP hidden size == pooled_projection_dim; T5 d_model == joint_attention_dim


def prompt_corpus() -> list[str]:
    """Sentences the template writer produces for every value of every shipped attribute file."""
    from synid_assets.core.generation import template_prompts as prompts

    lines = [prompts.OPENING.format(subject=s) for s in ("man", "woman", "non-binary person", "person")]
    lines.append(prompts.CLOSING)
    for path in sorted((REPO / "attributes").glob("*.txt")):
        for raw in path.read_text(encoding="utf-8").splitlines():
            value = raw.split("#", 1)[0].rsplit(",", 1)[0].strip()
            if value:
                lines.append(prompts.attribute_sentence(path.stem, value))
    return lines


def _clip_tokenizer(corpus: list[str]):
    from tokenizers import Tokenizer, models, trainers
    from transformers import CLIPTokenizer

    # Train a BPE with CLIP's own normalizer and pre-tokenizer, so every corpus word becomes one token.
    template = CLIPTokenizer(vocab={"<|startoftext|>": 0, "<|endoftext|>": 1}, merges=[])
    backend = Tokenizer(models.BPE(unk_token="<|endoftext|>", end_of_word_suffix="</w>"))
    backend.normalizer = template.backend_tokenizer.normalizer
    backend.pre_tokenizer = template.backend_tokenizer.pre_tokenizer
    trainer = trainers.BpeTrainer(
        vocab_size=4000,
        special_tokens=["<|startoftext|>", "<|endoftext|>"],
        end_of_word_suffix="</w>",
        show_progress=False,
    )
    backend.train_from_iterator(corpus, trainer=trainer)
    # BPE exposes its merges only through its serialized form.
    merges = json.loads(backend.to_str())["model"]["merges"]
    merges = [tuple(m) if isinstance(m, list) else tuple(m.split(" ")) for m in merges]
    return CLIPTokenizer(vocab=backend.get_vocab(), merges=merges, model_max_length=CLIP_MAX_LENGTH)


def _t5_tokenizer(corpus: list[str]):
    from transformers import T5Tokenizer

    words = Counter(w for line in corpus for w in line.split())
    chars = Counter(c for line in corpus for c in line if not c.isspace())
    total = sum(words.values()) + sum(chars.values())
    vocab: list[tuple[str, float]] = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0), ("▁", -2.0)]
    vocab += [(f"▁{w}", math.log(n / total)) for w, n in sorted(words.items())]
    # Single characters (low scores) so any text still tokenizes without <unk>.
    vocab += [(c, math.log(n / total) - 10.0) for c, n in sorted(chars.items())]
    return T5Tokenizer(vocab=vocab, extra_ids=0, model_max_length=512)


# Component configs: tiny ones for tests, FLUX.1-dev's own sizes for GPU benchmarks (random weights either way).
TINY_TRANSFORMER = {
    "patch_size": 1,
    "in_channels": 4,  # 4 * vae latent_channels: latents are packed in 2x2 patches
    "num_layers": 1,
    "num_single_layers": 1,
    "attention_head_dim": 16,
    "num_attention_heads": 2,
    "joint_attention_dim": HIDDEN,
    "pooled_projection_dim": HIDDEN,
    "guidance_embeds": True,  # like FLUX.1-dev: guidance is an input of the transformer
    "axes_dims_rope": [4, 4, 8],  # sums to attention_head_dim
}
TINY_CLIP = {"hidden_size": HIDDEN, "intermediate_size": 37, "num_attention_heads": 4, "num_hidden_layers": 2,
             "hidden_act": "gelu", "projection_dim": HIDDEN}  # fmt: skip
TINY_T5 = {"d_model": HIDDEN, "d_kv": 8, "d_ff": 37, "num_layers": 2, "num_heads": 4,
           "relative_attention_num_buckets": 8}  # fmt: skip
TINY_VAE = {
    "sample_size": 32,
    "block_out_channels": (4,),
    "layers_per_block": 1,
    "latent_channels": 1,
    "norm_num_groups": 1,
    "shift_factor": 0.0609,
    "scaling_factor": 1.5035,
}
# black-forest-labs/FLUX.1-dev's component configs (transformer/, text_encoder/ = CLIP ViT-L/14's text tower,
# text_encoder_2/ = T5 v1.1 XXL's encoder, vae/): 11.9B + 0.12B + 4.8B + 0.08B parameters.
FLUX_DEV_TRANSFORMER = {**TINY_TRANSFORMER, "in_channels": 64, "num_layers": 19, "num_single_layers": 38,
                        "attention_head_dim": 128, "num_attention_heads": 24, "joint_attention_dim": 4096,
                        "pooled_projection_dim": 768, "axes_dims_rope": [16, 56, 56]}  # fmt: skip
FLUX_DEV_CLIP = {"vocab_size": 49408, "hidden_size": 768, "intermediate_size": 3072, "num_attention_heads": 12,
                 "num_hidden_layers": 12, "hidden_act": "quick_gelu", "projection_dim": 768}  # fmt: skip
FLUX_DEV_T5 = {"vocab_size": 32128, "d_model": 4096, "d_kv": 64, "d_ff": 10240, "num_layers": 24, "num_heads": 64,
               "relative_attention_num_buckets": 32, "feed_forward_proj": "gated-gelu",
               "tie_word_embeddings": False}  # fmt: skip
FLUX_DEV_VAE = {
    "sample_size": 1024,
    "block_out_channels": (128, 256, 512, 512),
    "down_block_types": ("DownEncoderBlock2D",) * 4,
    "up_block_types": ("UpDecoderBlock2D",) * 4,
    "layers_per_block": 2,
    "latent_channels": 16,
    "norm_num_groups": 32,
    "shift_factor": 0.1159,
    "scaling_factor": 0.3611,
}


@contextmanager
def building_on(device: str, dtype=None) -> Iterator[None]:
    """Modules created inside get their parameters on `device` in `dtype` (float32 when None), initialised there:
    no float32 copy and no host round trip for full-size models."""
    import torch

    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype or torch.float32)
    try:
        with torch.device(device):
            yield
    finally:
        torch.set_default_dtype(previous)


def flux_pipeline(
    transformer_config: dict = TINY_TRANSFORMER,
    clip_config: dict = TINY_CLIP,
    t5_config: dict = TINY_T5,
    vae_config: dict = TINY_VAE,
    device: str = "cpu",
    dtype=None,
):
    """A random-weight FluxPipeline of the given component sizes, built in memory (seeded: torch.manual_seed(0)).

    Weights are initialised on `device` in `dtype` (float32 when None): full-size models build in seconds on a GPU
    and then move where the caller needs them. The tokenizers are the small local ones; their ids fit any vocab.
    """
    import torch
    from diffusers import AutoencoderKL, FlowMatchEulerDiscreteScheduler, FluxPipeline, FluxTransformer2DModel
    from transformers import CLIPTextConfig, CLIPTextModel, T5Config, T5EncoderModel

    corpus = prompt_corpus()
    tokenizer = _clip_tokenizer(corpus)
    tokenizer_2 = _t5_tokenizer(corpus)
    torch.manual_seed(0)
    with building_on(device, dtype):
        transformer = FluxTransformer2DModel(**transformer_config)
        text_encoder = CLIPTextModel(
            CLIPTextConfig(
                **{"vocab_size": len(tokenizer), **clip_config},
                max_position_embeddings=CLIP_MAX_LENGTH,
                bos_token_id=tokenizer.bos_token_id,
                eos_token_id=tokenizer.eos_token_id,
                pad_token_id=tokenizer.pad_token_id,
            )
        )
        text_encoder_2 = T5EncoderModel(
            T5Config(
                **{"vocab_size": len(tokenizer_2), **t5_config},
                pad_token_id=tokenizer_2.pad_token_id,
                eos_token_id=tokenizer_2.eos_token_id,
                decoder_start_token_id=tokenizer_2.pad_token_id,
            )
        )
        vae = AutoencoderKL(
            in_channels=3, out_channels=3, use_quant_conv=False, use_post_quant_conv=False, **vae_config
        )
    scheduler = FlowMatchEulerDiscreteScheduler(
        base_image_seq_len=256, base_shift=0.5, max_image_seq_len=4096, max_shift=1.15, use_dynamic_shifting=True
    )
    return FluxPipeline(
        scheduler=scheduler,
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        text_encoder_2=text_encoder_2,
        tokenizer_2=tokenizer_2,
        transformer=transformer,
    )


def build_tiny_flux(directory: Path) -> Path:
    """Build and save a tiny random-weight FluxPipeline (seeded with torch.manual_seed(0)) into directory."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    flux_pipeline().save_pretrained(directory)
    return directory


def save_random_flux_lora(transformer, directory: Path, rank: int = 64, std: float = 0.01) -> Path:
    """A random LoRA on every attention projection of `transformer` (to_q/k/v, to_out.0), in diffusers' format.

    Written as a state dict, without wrapping the model: the transformer itself stays untouched, so the same
    in-memory model can then load the LoRA through `load_lora_weights` as a hub LoRA would be loaded.
    """
    import torch
    from diffusers import FluxPipeline

    generator = torch.Generator("cpu").manual_seed(1)
    targets = (".to_q", ".to_k", ".to_v", ".to_out.0")
    layers = {}
    for name, module in transformer.named_modules():
        if isinstance(module, torch.nn.Linear) and name.endswith(targets):
            a = torch.randn(rank, module.in_features, generator=generator) * std
            b = torch.randn(module.out_features, rank, generator=generator) * std
            layers[f"{name}.lora_A.weight"] = a.to(module.weight.dtype)
            layers[f"{name}.lora_B.weight"] = b.to(module.weight.dtype)
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    FluxPipeline.save_lora_weights(directory, transformer_lora_layers=layers)
    return directory


def build_tiny_lora(pipeline_dir: Path, directory: Path, rank: int = 4) -> Path:
    """A random (non-zero) LoRA on the tiny transformer's attention projections, saved in diffusers' format."""
    import torch
    from diffusers import FluxPipeline, FluxTransformer2DModel
    from peft import LoraConfig, get_peft_model_state_dict

    transformer = FluxTransformer2DModel.from_pretrained(pipeline_dir, subfolder="transformer")
    torch.manual_seed(1)
    config = LoraConfig(
        r=rank, lora_alpha=rank, target_modules=["to_q", "to_k", "to_v", "to_out.0"], init_lora_weights=False
    )
    transformer.add_adapter(config)
    with torch.no_grad():  # large enough to change a 32x32 image visibly
        for name, param in transformer.named_parameters():
            if "lora_" in name:
                param.normal_(0.0, 0.5)
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    FluxPipeline.save_lora_weights(directory, transformer_lora_layers=get_peft_model_state_dict(transformer))
    return directory
