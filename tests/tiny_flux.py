"""A tiny FluxPipeline with random weights, built locally (no download), for tests of the FLUX backend.

Every component is FLUX's real class (FluxTransformer2DModel, AutoencoderKL, FlowMatchEulerDiscreteScheduler,
CLIPTextModel + CLIPTokenizer, T5EncoderModel + T5Tokenizer), only tiny. The tokenizers are built here with the
`tokenizers` library from the words the template prompt writer and the shipped attribute files use.
"""

from __future__ import annotations

import json
import math
from collections import Counter
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

CLIP_MAX_LENGTH = 77
HIDDEN = 32  # CLIP hidden size == pooled_projection_dim; T5 d_model == joint_attention_dim


def prompt_corpus() -> list[str]:
    """Sentences the template writer produces for every value of every shipped attribute file."""
    from synid_assets.core import prompts

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


def build_tiny_flux(directory: Path) -> Path:
    """Build and save a tiny random-weight FluxPipeline (seeded with torch.manual_seed(0)) into directory."""
    import torch
    from diffusers import AutoencoderKL, FlowMatchEulerDiscreteScheduler, FluxPipeline, FluxTransformer2DModel
    from transformers import CLIPTextConfig, CLIPTextModel, T5Config, T5EncoderModel

    directory = Path(directory)
    corpus = prompt_corpus()
    tokenizer = _clip_tokenizer(corpus)
    tokenizer_2 = _t5_tokenizer(corpus)

    torch.manual_seed(0)
    transformer = FluxTransformer2DModel(
        patch_size=1,
        in_channels=4,  # 4 * vae latent_channels: latents are packed in 2x2 patches
        num_layers=1,
        num_single_layers=1,
        attention_head_dim=16,
        num_attention_heads=2,
        joint_attention_dim=HIDDEN,
        pooled_projection_dim=HIDDEN,
        guidance_embeds=True,  # like FLUX.1-dev: guidance is an input of the transformer
        axes_dims_rope=[4, 4, 8],  # sums to attention_head_dim
    )
    text_encoder = CLIPTextModel(
        CLIPTextConfig(
            vocab_size=len(tokenizer),
            hidden_size=HIDDEN,
            intermediate_size=37,
            num_attention_heads=4,
            num_hidden_layers=2,
            max_position_embeddings=CLIP_MAX_LENGTH,
            bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
            hidden_act="gelu",
            projection_dim=HIDDEN,
        )
    )
    text_encoder_2 = T5EncoderModel(
        T5Config(
            vocab_size=len(tokenizer_2),
            d_model=HIDDEN,
            d_kv=8,
            d_ff=37,
            num_layers=2,
            num_heads=4,
            relative_attention_num_buckets=8,
            pad_token_id=tokenizer_2.pad_token_id,
            eos_token_id=tokenizer_2.eos_token_id,
            decoder_start_token_id=tokenizer_2.pad_token_id,
        )
    )
    vae = AutoencoderKL(
        sample_size=32,
        in_channels=3,
        out_channels=3,
        block_out_channels=(4,),
        layers_per_block=1,
        latent_channels=1,
        norm_num_groups=1,
        use_quant_conv=False,
        use_post_quant_conv=False,
        shift_factor=0.0609,
        scaling_factor=1.5035,
    )
    scheduler = FlowMatchEulerDiscreteScheduler(
        base_image_seq_len=256, base_shift=0.5, max_image_seq_len=4096, max_shift=1.15, use_dynamic_shifting=True
    )
    pipe = FluxPipeline(
        scheduler=scheduler,
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        text_encoder_2=text_encoder_2,
        tokenizer_2=tokenizer_2,
        transformer=transformer,
    )
    directory.mkdir(parents=True, exist_ok=True)
    pipe.save_pretrained(directory)
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
