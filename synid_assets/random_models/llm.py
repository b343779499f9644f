"""A tiny random-weight Qwen2-style chat model, built locally so LLM tests need no download.

The directory it writes is loaded by `AutoTokenizer` / `AutoModelForCausalLM` exactly like a real checkpoint.
"""

from __future__ import annotations

from pathlib import Path

from synid_assets.core.config.profiles import REPO_ROOT as REPO

IM_START = "<|im_start|>"
IM_END = "<|im_end|>"
END_OF_TEXT = "<|endoftext|>"

# Qwen2.5's chat template, reduced to plain messages (no tools); the default system prompt is kept.
CHAT_TEMPLATE = (
    "{%- if messages[0]['role'] != 'system' %}"
    "{{- '<|im_start|>system\\nYou are a helpful assistant.<|im_end|>\\n' }}"
    "{%- endif %}"
    "{%- for message in messages %}"
    "{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' }}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}"
    "{{- '<|im_start|>assistant\\n' }}"
    "{%- endif %}"
)

_EXTRA_CORPUS = [
    "Photograph of a man. The subject has a neutral face expression.",
    "Photograph of a woman. Photograph of a non-binary person. Photograph of a person.",
    "Photo captures the subject from the neck up with grey clothing slightly visible around the neck.",
    "White background. The subject has hair, eyes, lips, a nose and a face shape.",
    "Write one short caption that names every attribute. Do not mention the background or clothing.",
    "You write captions for a face image generator. Age Origin Hair color Hair style Facial hair Body type",
]


def _corpus() -> list[str]:
    """The attribute vocabulary of the shipped spec plus the words of the instructions and fixed prompt parts."""
    lines = list(_EXTRA_CORPUS)
    for path in sorted((REPO / "attributes").glob("*.txt")):
        stem = path.stem.replace("_", " ")
        for line in path.read_text(encoding="utf-8").splitlines():
            value = line.split(",", 1)[0].strip()
            if value and not value.startswith("#"):
                lines.append(f"{stem}: {value}. The subject is {value}.")
    return lines


def build_tiny_chat_model(directory: Path) -> Path:
    """Write a byte-level BPE tokenizer, a chat template and a random 2-layer Qwen2 model into `directory`."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast, Qwen2Config, Qwen2ForCausalLM

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)

    # Byte-level BPE like Qwen's: any text round-trips, and random ids can decode to non-ASCII bytes.
    backend = Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=512,
        special_tokens=[END_OF_TEXT, IM_START, IM_END],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    backend.train_from_iterator(_corpus(), trainer=trainer)

    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend,
        bos_token=None,
        eos_token=IM_END,
        pad_token=END_OF_TEXT,
        additional_special_tokens=[IM_START, IM_END],
    )
    tokenizer.chat_template = CHAT_TEMPLATE
    tokenizer.save_pretrained(directory)

    im_end = tokenizer.convert_tokens_to_ids(IM_END)
    config = Qwen2Config(
        vocab_size=len(tokenizer),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        intermediate_size=64,
        max_position_embeddings=1024,
        eos_token_id=im_end,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=None,
        tie_word_embeddings=False,
    )
    torch.manual_seed(0)
    model = Qwen2ForCausalLM(config)
    model.save_pretrained(directory)
    return directory
