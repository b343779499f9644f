"""An LLM prompt writer (any transformers chat model) with FLUXSynID's prompt semantics.

The model writes only the middle of the prompt: a short caption naming every sampled attribute. The fixed opening
("Photograph of a {subject}. The subject has a neutral face expression.") and the document-framing closing are
added here, whatever the model writes, so every prompt has the same frame as the template writer's.

Reproducibility: attempt k of an identity samples with its own `torch.Generator` seeded by
`stream_seed(identity.seed, "prompt", k)`, in a sampling loop where each row of a batch only sees its own tokens, so
an identity's text does not depend on which other identities share its batch (exactly so on CPU float32; on GPU,
batched kernels may differ in the last bits, which can rarely change a sampled token).

Validation: ASCII only, non-empty, at most `max_chars`, every non-gender attribute value present (case-insensitive),
and the model stopped on its own before `max_new_tokens`. A failing identity is retried with the next attempt seed;
`max_retries` counts retries, so an identity gets at most `max_retries + 1` attempts. After the last failure the
template writer's prompt is used and `fallback=True`.
"""

from __future__ import annotations

import inspect
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from synid_assets.core.config.models import license_of
from synid_assets.core.config.requirements import CAUSAL_LM_FILES, BackendRequirements, ModelNeed
from synid_assets.core.dataset.seeds import stream_seed
from synid_assets.core.errors import ModelLoadError
from synid_assets.core.generation.template_prompts import CLOSING, GENDER_CLASSES, OPENING, template_prompt
from synid_assets.core.generation.types import IdentityRecord, PromptResult

SYSTEM_MESSAGE = (
    "You write captions for a photo-realistic face image generator. You describe only what the attributes you "
    "are given say about a person's face and head, in plain, factual English."
)

USER_MESSAGE = """Describe a {subject} with these attributes:
{attribute_lines}

Rules:
1. Write one short caption of a few sentences that names every attribute above, using the exact words of each value.
2. Describe only visible, factual features. No subjective traits such as beauty, attractiveness, neatness, \
confidence or personality.
3. Say nothing about the background, clothing, lighting, camera or image style.
4. Your caption continues this fixed opening, which is already written: "{opening}" Do not repeat the opening, \
and do not add anything after the caption.
5. Output only the caption: no title, no quotes, no explanation."""

_DTYPES = {
    "bfloat16": "bfloat16",
    "bf16": "bfloat16",
    "float16": "float16",
    "fp16": "float16",
    "half": "float16",
    "float32": "float32",
    "fp32": "float32",
    "float": "float32",
}

# Tokens that end an assistant turn in common chat templates, besides the tokenizer's / model's own EOS ids.
_STOP_TOKENS = ("<|im_end|>", "<|endoftext|>", "<|eot_id|>", "<end_of_turn>", "</s>")

_QUOTES = "\"'`\u201c\u201d\u2018\u2019"


def attribute_label(attribute: str) -> str:
    """A readable label from a FLUXSynID class stem: 'hair_colors' -> 'Hair color', 'ages' -> 'Age'."""
    words = attribute.replace("-", "_").split("_")
    words = [w for w in words if w] or [attribute]
    last = words[-1]
    # Class files are mostly plural nouns; the prompt reads better with the singular.
    if last.endswith("ies") and len(last) > 4:
        last = last[:-3] + "y"
    elif last.endswith(("ches", "shes", "sses", "xes")):
        last = last[:-2]
    elif last.endswith("s") and not last.endswith(("ss", "us", "is")) and len(last) > 3:
        last = last[:-1]
    words[-1] = last
    return " ".join(words).capitalize()


def described_attributes(attributes: Mapping[str, str]) -> dict[str, str]:
    """The attributes the caption must name: all but the gender class, whose value only picks the subject word."""
    return {k: v for k, v in attributes.items() if k.lower() not in GENDER_CLASSES}


def build_messages(identity: IdentityRecord) -> list[dict[str, str]]:
    """The chat messages asking for one identity's caption."""
    lines = "\n".join(f"- {attribute_label(k)}: {v}" for k, v in described_attributes(identity.attributes).items())
    user = USER_MESSAGE.format(
        subject=identity.subject,
        attribute_lines=lines or "- (no further attributes)",
        opening=OPENING.format(subject=identity.subject),
    )
    return [{"role": "system", "content": SYSTEM_MESSAGE}, {"role": "user", "content": user}]


def _sentences(text: str) -> list[str]:
    return [s for s in re.split(r"(?<=[.!?])\s+", text.strip()) if s]


def _norm(text: str) -> str:
    return " ".join(text.lower().split()).strip(_QUOTES + " ")


def clean_caption(model_text: str, subject: str) -> str:
    """The model's caption with whitespace collapsed, wrapping quotes and echoed opening/closing sentences removed."""
    text = " ".join(model_text.split())
    text = re.sub(r"^(caption|prompt)\s*:\s*", "", text, flags=re.IGNORECASE)
    text = text.strip(_QUOTES + " ")
    opening = {_norm(s) for s in _sentences(OPENING.format(subject=subject))}
    closing = {_norm(s) for s in _sentences(CLOSING)}
    sentences = _sentences(text)
    # Models often restate the frame they were told is already there; the frame is re-added exactly once.
    while sentences and _norm(sentences[0]) in opening:
        sentences.pop(0)
    while sentences and _norm(sentences[-1]) in closing:
        sentences.pop()
    text = " ".join(sentences).strip(_QUOTES + " ")
    if text and text[-1] not in ".!?":
        text += "."
    return text


def assemble_prompt(model_text: str, subject: str, trigger: str = "") -> str:
    """Optional trigger, the fixed opening, the cleaned caption, then the fixed closing, always in this order."""
    parts = [OPENING.format(subject=subject), clean_caption(model_text, subject), CLOSING]
    text = " ".join(p for p in parts if p)
    return f"{trigger}, {text}" if trigger else text


def validate_caption(text: str, attributes: Mapping[str, str], max_chars: int) -> list[str]:
    """Why a (cleaned) caption is unacceptable; an empty list means it is valid."""
    reasons: list[str] = []
    if not text.strip():
        return ["empty caption"]
    if not text.isascii():
        bad = sorted({c for c in text if not c.isascii()})
        reasons.append("non-ASCII characters: " + " ".join(f"U+{ord(c):04X}" for c in bad[:5]))
    if len(text) > max_chars:
        reasons.append(f"too long: {len(text)} > {max_chars} characters")
    lowered = text.lower()
    for attribute, value in described_attributes(attributes).items():
        if value.lower() not in lowered:
            reasons.append(f"missing {attribute}={value!r}")
    return reasons


@dataclass
class _Completion:
    text: str
    stopped: bool  # ended on a stop token rather than at max_new_tokens


class LLMPromptWriter:
    """PromptWriter backed by a transformers chat model (hub repo id or local directory)."""

    name = "llm"
    version = "1"

    # What it needs (see core/config/requirements.py): a GPU when one is visible (device="auto"), else the CPU.
    requirements = BackendRequirements(device="any")

    @classmethod
    def required_models(cls, options: Mapping[str, Any]) -> list[ModelNeed]:
        """The chat model's configs, tokenizer files and safetensors weights."""
        model_id = options["model_id"]
        return [ModelNeed(model_id, options["revision"], CAUSAL_LM_FILES, license_of(model_id))]

    def __init__(
        self,
        model_id: str = "Qwen/Qwen2.5-7B-Instruct",
        revision: str | None = None,
        dtype: str = "bfloat16",
        device: str = "auto",
        batch_size: int = 8,
        max_new_tokens: int = 160,
        temperature: float = 0.7,
        top_p: float = 0.8,
        top_k: int = 20,
        max_retries: int = 3,
        max_chars: int = 900,
        trigger: str = "",
        cache_dir: str | None = None,
        local_files_only: bool = False,
    ) -> None:
        if dtype.lower() not in _DTYPES:
            raise ValueError(f"unknown dtype {dtype!r}; use one of {sorted(set(_DTYPES))}")
        if batch_size < 1 or max_new_tokens < 1 or max_retries < 0:
            raise ValueError("batch_size and max_new_tokens must be >= 1 and max_retries >= 0")
        self.model_id = model_id
        self.revision = revision
        self.dtype = _DTYPES[dtype.lower()]
        self.device = device
        self.batch_size = batch_size
        self.max_new_tokens = max_new_tokens
        self.temperature = temperature
        self.top_p = top_p
        self.top_k = top_k
        self.max_retries = max_retries
        self.max_chars = max_chars
        self.trigger = trigger
        self.cache_dir = cache_dir
        self.local_files_only = local_files_only
        # Filled by load(); nothing heavy happens before it.
        self._torch: Any = None
        self._tokenizer: Any = None
        self._model: Any = None
        self._device: str | None = None
        self._resolved_revision: str | None = None
        self._stop_ids: frozenset[int] = frozenset()
        self._pad_id = 0
        self._cache_kw = "past_key_values"
        self._takes_logits_to_keep = False

    # ------------------------------------------------------------------------------------------ loading

    @property
    def loaded(self) -> bool:
        return self._model is not None

    def _is_local(self) -> bool:
        return Path(self.model_id).expanduser().is_dir()

    def _looks_like_path(self) -> bool:
        mid = self.model_id
        return mid.startswith(("/", "./", "../", "~")) or "\\" in mid or mid.count("/") > 1

    def _load_error(self, problem: str) -> ModelLoadError:
        where = f"directory {self.model_id}" if self._looks_like_path() else f"model {self.model_id!r}"
        rev = f" at revision {self.revision!r}" if self.revision else ""
        return ModelLoadError(
            f"cannot load the LLM prompt {where}{rev}: {problem}. Fetch the profile's models first with "
            "`synid models download PROFILE` (gated repositories need an HF_TOKEN environment variable for an "
            "account with access), or set model_id to a local directory holding config.json, the tokenizer and "
            "the weights."
        )

    def load(self) -> None:
        """Load the tokenizer and model once; torch and transformers are imported only here."""
        if self._model is not None:
            return
        if self._looks_like_path() and not self._is_local():
            raise self._load_error("no such directory")
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        source = str(Path(self.model_id).expanduser()) if self._is_local() else self.model_id
        common = {"revision": self.revision, "cache_dir": self.cache_dir, "local_files_only": self.local_files_only}
        try:
            tokenizer = AutoTokenizer.from_pretrained(source, **common)
            model = AutoModelForCausalLM.from_pretrained(source, dtype=getattr(torch, self.dtype), **common)
        except (OSError, ValueError) as exc:  # missing / gated / not cached repos surface as OSError subclasses
            raise self._load_error(f"{type(exc).__name__}: {str(exc).strip().rstrip('.')}") from exc
        if not getattr(tokenizer, "chat_template", None):
            raise self._load_error("the tokenizer has no chat template (an instruction-tuned chat model is needed)")

        device = self.device
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        model.to(device)
        model.eval()

        self._torch = torch
        self._tokenizer = tokenizer
        self._model = model
        self._device = device
        self._resolved_revision = None if self._is_local() else self._commit_hash(model)
        self._stop_ids = self._collect_stop_ids(tokenizer, model)
        pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        self._pad_id = int(pad if pad is not None else 0)
        # transformers renamed the KV-cache argument and output `past_key_values` -> `cache`; use what it takes.
        forward_params = inspect.signature(model.forward).parameters
        self._cache_kw = "cache" if "cache" in forward_params else "past_key_values"
        self._takes_logits_to_keep = "logits_to_keep" in forward_params

    def _commit_hash(self, model: Any) -> str | None:
        """The hub commit the weights came from (older transformers keep it on the config; else ask the cache)."""
        commit = getattr(model.config, "_commit_hash", None)
        if commit:
            return str(commit)
        try:
            from huggingface_hub import try_to_load_from_cache

            path = try_to_load_from_cache(
                self.model_id, "config.json", cache_dir=self.cache_dir, revision=self.revision
            )
        except Exception:  # a best-effort record; loading already succeeded
            return self.revision
        if isinstance(path, str) and Path(path).parent.parent.name == "snapshots":
            return Path(path).parent.name
        return self.revision

    @staticmethod
    def _collect_stop_ids(tokenizer: Any, model: Any) -> frozenset[int]:
        ids: set[int] = set()
        for source in (getattr(model, "generation_config", None), model.config, tokenizer):
            eos = getattr(source, "eos_token_id", None)
            if isinstance(eos, int):
                ids.add(eos)
            elif isinstance(eos, (list, tuple)):
                ids.update(int(e) for e in eos)
        vocab = tokenizer.get_vocab()
        ids.update(vocab[t] for t in _STOP_TOKENS if t in vocab)
        return frozenset(ids)

    # ----------------------------------------------------------------------------------------- sampling

    def _params(self, seed: int, attempts: int, failures: list[str]) -> dict[str, Any]:
        return {
            "model_id": self.model_id,
            "revision": self._resolved_revision,
            "dtype": self.dtype,
            "device": self._device,
            "temperature": self.temperature,
            "top_p": self.top_p,
            "top_k": self.top_k,
            "max_new_tokens": self.max_new_tokens,
            "seed": seed,
            "attempts": attempts,
            "failure_reasons": failures,
            "trigger": self.trigger,
        }

    def _pick(self, logits: Any, generator: Any) -> int:
        """One token from one row's logits: temperature, then top-k, then top-p, then a seeded multinomial draw."""
        torch = self._torch
        if self.temperature <= 0:
            return int(torch.argmax(logits))
        logits = logits / self.temperature
        # Candidates in descending order: only the top k when set, so a large vocabulary is never fully sorted.
        if 0 < self.top_k < logits.shape[-1]:
            values, index = torch.topk(logits, self.top_k)
        else:
            values, index = torch.sort(logits, descending=True)
        if 0 < self.top_p < 1:
            probs = torch.softmax(values, dim=-1)
            # Drop a candidate when the ones before it already reach top_p; the most likely one always stays.
            values = values.masked_fill((torch.cumsum(probs, dim=-1) - probs) > self.top_p, float("-inf"))
        probs = torch.softmax(values, dim=-1)
        return int(index[torch.multinomial(probs, 1, generator=generator)])

    def _sample(self, prompts: Sequence[str], seeds: Sequence[int]) -> list[_Completion]:
        """Sample a completion for each chat-formatted prompt, row i only from seeds[i].

        Left-padded batch with explicit position ids (so a row's positions ignore its padding) and a KV cache.
        """
        torch = self._torch
        tokenizer, model, device = self._tokenizer, self._model, self._device
        encoded = [tokenizer(p, add_special_tokens=False)["input_ids"] for p in prompts]
        rows, width = len(encoded), max(len(e) for e in encoded)
        input_ids = torch.full((rows, width), self._pad_id, dtype=torch.long)
        mask = torch.zeros((rows, width), dtype=torch.long)
        for i, ids in enumerate(encoded):
            input_ids[i, width - len(ids) :] = torch.tensor(ids, dtype=torch.long)
            mask[i, width - len(ids) :] = 1
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        input_ids, mask, positions = input_ids.to(device), mask.to(device), positions.to(device)

        generators = [torch.Generator(device=device).manual_seed(int(s)) for s in seeds]
        vocab_limit = len(tokenizer)  # model vocabularies are often padded past the tokenizer's
        tokens: list[list[int]] = [[] for _ in range(rows)]
        done = [False] * rows
        past = None
        step_ids = input_ids
        # Only the last position's logits are needed; a 150k vocabulary over the whole prompt would be large.
        extra = {"logits_to_keep": 1} if self._takes_logits_to_keep else {}
        with torch.inference_mode():
            for _ in range(self.max_new_tokens):
                out = model(
                    input_ids=step_ids,
                    attention_mask=mask,
                    position_ids=positions,
                    use_cache=True,
                    **{self._cache_kw: past},
                    **extra,
                )
                past = out[self._cache_kw]
                logits = out.logits[:, -1, :].float()
                if logits.shape[-1] > vocab_limit:
                    logits[:, vocab_limit:] = float("-inf")
                chosen = []
                for i in range(rows):
                    if done[i]:
                        chosen.append(self._pad_id)  # finished rows idle; nothing they see is kept
                        continue
                    token = self._pick(logits[i], generators[i])
                    if token in self._stop_ids:
                        done[i] = True
                    else:
                        tokens[i].append(token)
                    chosen.append(token)
                if all(done):
                    break
                step_ids = torch.tensor(chosen, dtype=torch.long, device=device)[:, None]
                mask = torch.cat([mask, torch.ones((rows, 1), dtype=mask.dtype, device=device)], dim=-1)
                positions = positions[:, -1:] + 1
        return [
            _Completion(tokenizer.decode(t, skip_special_tokens=True), stopped)
            for t, stopped in zip(tokens, done, strict=True)
        ]

    # ------------------------------------------------------------------------------------------- writing

    def write(self, identities: Sequence[IdentityRecord]) -> list[PromptResult]:
        if not identities:
            return []
        self.load()
        chats = [
            self._tokenizer.apply_chat_template(build_messages(identity), tokenize=False, add_generation_prompt=True)
            for identity in identities
        ]
        results: list[PromptResult | None] = [None] * len(identities)
        failures: list[list[str]] = [[] for _ in identities]
        last: list[tuple[str, int]] = [("", 0)] * len(identities)
        pending = list(range(len(identities)))
        for attempt in range(self.max_retries + 1):
            if not pending:
                break
            still_failing: list[int] = []
            for start in range(0, len(pending), self.batch_size):
                chunk = pending[start : start + self.batch_size]
                seeds = [stream_seed(identities[i].seed, "prompt", attempt) for i in chunk]
                completions = self._sample([chats[i] for i in chunk], seeds)
                for i, seed, completion in zip(chunk, seeds, completions, strict=True):
                    identity = identities[i]
                    last[i] = (completion.text, seed)
                    reasons = validate_caption(
                        clean_caption(completion.text, identity.subject), identity.attributes, self.max_chars
                    )
                    if not completion.stopped:
                        reasons.append(f"no end of turn within max_new_tokens={self.max_new_tokens}")
                    if reasons:
                        failures[i].append(f"attempt {attempt}: " + "; ".join(reasons))
                        still_failing.append(i)
                        continue
                    results[i] = PromptResult(
                        prompt=assemble_prompt(completion.text, identity.subject, self.trigger),
                        writer=self.name,
                        writer_version=self.version,
                        raw_output=completion.text,
                        params=self._params(seed, attempt + 1, failures[i]),
                    )
            pending = still_failing
        for i in pending:  # every attempt failed: the template writes it, and the record says so
            identity = identities[i]
            text, seed = last[i]
            results[i] = PromptResult(
                prompt=template_prompt(identity.attributes, identity.subject, self.trigger),
                writer=self.name,
                writer_version=self.version,
                raw_output=text,
                params=self._params(seed, self.max_retries + 1, failures[i]),
                fallback=True,
            )
        return [r for r in results if r is not None]
