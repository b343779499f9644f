"""The LLM prompt writer, run for real (transformers, CPU float32) on a tiny random-weight chat model."""

from __future__ import annotations

import shutil
from collections.abc import Sequence
from pathlib import Path

import pytest

from synid_assets.core.dataset.seeds import stream_seed
from synid_assets.core.generation.llm_prompts import (
    LLMPromptWriter,
    ModelLoadError,
    _Completion,
    assemble_prompt,
    attribute_label,
    build_messages,
    clean_caption,
    validate_caption,
)
from synid_assets.core.generation.template_prompts import CLOSING, OPENING, template_prompt
from synid_assets.core.generation.types import IdentityRecord, PromptWriter
from synid_assets.random_models.llm import build_tiny_chat_model

MAX_NEW_TOKENS = 12  # random weights never stop on their own; keep each attempt short


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_chat_model(tmp_path_factory.mktemp("tiny_llm") / "model")


@pytest.fixture(scope="module")
def writer(tiny_model: Path) -> LLMPromptWriter:
    # Loaded once for the module: exactly the path a profile takes with a local model directory.
    w = LLMPromptWriter(
        model_id=str(tiny_model), dtype="float32", device="cpu", max_new_tokens=MAX_NEW_TOKENS, max_retries=1
    )
    w.load()
    return w


def _identities() -> list[IdentityRecord]:
    # Different attribute counts give prompts of different lengths, so a shared batch is left-padded.
    return [
        IdentityRecord("b-0000", "b", 0, 11, {"genders": "Male", "ages": "30-39", "hair_colors": "Black"}, "man"),
        IdentityRecord(
            "b-0001",
            "b",
            1,
            22,
            {
                "genders": "Female",
                "ages": "20-29",
                "origins": "South Asian",
                "hair_colors": "Brown",
                "nose_shape": "Small and narrow",
                "eyewear": "Clear non-reflective eyeglasses",
            },
            "woman",
        ),
        IdentityRecord("b-0002", "b", 2, 33, {"genders": "Non-binary", "eye_shape": "Almond"}, "non-binary person"),
    ]


# ------------------------------------------------------------------------------------------------ pure helpers


def test_attribute_labels_come_from_class_stems() -> None:
    assert attribute_label("hair_colors") == "Hair color"
    assert attribute_label("ages") == "Age"
    assert attribute_label("origins") == "Origin"
    assert attribute_label("facial_hair") == "Facial hair"
    assert attribute_label("eyewear") == "Eyewear"
    assert attribute_label("body_type") == "Body type"


def test_messages_name_every_non_gender_attribute() -> None:
    identity = _identities()[1]
    system, user = build_messages(identity)
    assert (system["role"], user["role"]) == ("system", "user")
    text = user["content"]
    assert "Describe a woman" in text
    assert "- Hair color: Brown" in text and "- Nose shape: Small and narrow" in text
    assert "Female" not in text and "Gender" not in text  # the gender value only picks the subject word
    assert OPENING.format(subject="woman") in text
    assert "background" in text and "clothing" in text and "beauty" in text


def test_validate_caption_reasons() -> None:
    attributes = {"genders": "Male", "ages": "30-39", "hair_colors": "Black"}
    assert validate_caption("A 30-39 year old with black hair.", attributes, 900) == []
    assert validate_caption("   ", attributes, 900) == ["empty caption"]
    reasons = validate_caption("A 30-39 year old with brown hair.", attributes, 900)
    assert reasons == ["missing hair_colors='Black'"]
    non_ascii = validate_caption("A 30\u201339 year old with black hair, caf\u00e9.", attributes, 900)
    assert any(r.startswith("non-ASCII") for r in non_ascii) and "missing ages='30-39'" in non_ascii
    long = "A 30-39 year old with black hair. " + "x" * 100
    assert any(r.startswith("too long") for r in validate_caption(long, attributes, 50))
    # The gender value never has to appear.
    assert validate_caption("Aged 30-39, black hair.", attributes, 900) == []


def test_assemble_prompt_frames_the_caption_exactly_once() -> None:
    opening = OPENING.format(subject="man")
    plain = assemble_prompt("He is 30-39 with black hair.", "man")
    assert plain == f"{opening} He is 30-39 with black hair. {CLOSING}"
    echoed = assemble_prompt(f'"{opening} He is 30-39 with black hair. {CLOSING}"', "man")
    assert echoed == plain
    partly_echoed = assemble_prompt("Photograph of a man. He is 30-39 with black hair. White background.", "man")
    assert partly_echoed == plain
    with_trigger = assemble_prompt("He is 30-39 with   black\nhair", "man", trigger="s7ll2f4h")
    assert with_trigger == f"s7ll2f4h, {plain}"
    assert with_trigger.startswith("s7ll2f4h, Photograph of a man.")
    assert assemble_prompt("Whatever the model says", "woman").endswith(CLOSING)
    assert clean_caption(f"{OPENING.format(subject='woman')} {CLOSING}", "woman") == ""


# ------------------------------------------------------------------------------------------ real model loading


def test_missing_model_dir_raises_model_load_error(tmp_path: Path) -> None:
    missing = tmp_path / "no-such-model"
    with pytest.raises(ModelLoadError) as info:
        LLMPromptWriter(model_id=str(missing), dtype="float32", device="cpu").load()
    message = str(info.value)
    assert str(missing) in message and "synid models download" in message and "HF_TOKEN" in message


def test_uncached_hub_id_raises_model_load_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    writer = LLMPromptWriter(model_id="synid-test/not-downloaded", cache_dir=str(tmp_path), local_files_only=True)
    with pytest.raises(ModelLoadError, match="synid-test/not-downloaded"):
        writer.load()


def test_hub_cache_load_records_the_commit(tiny_model: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # The layout `huggingface_hub` downloads into, built by hand so no network is needed.
    commit = "0123456789abcdef0123456789abcdef01234567"
    repo = tmp_path / "models--synid-test--tiny"
    shutil.copytree(tiny_model, repo / "snapshots" / commit)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    writer = LLMPromptWriter(
        model_id="synid-test/tiny",
        dtype="float32",
        device="cpu",
        cache_dir=str(tmp_path),
        local_files_only=True,
        max_new_tokens=MAX_NEW_TOKENS,
        max_retries=0,
    )
    writer.load()
    (result,) = writer.write([_identities()[2]])
    assert result.params["revision"] == commit
    assert result.params["model_id"] == "synid-test/tiny"


def test_writer_is_a_prompt_writer_and_loads_lazily(tiny_model: Path) -> None:
    writer = LLMPromptWriter(model_id=str(tiny_model))
    assert isinstance(writer, PromptWriter)
    assert (writer.name, writer.version) == ("llm", "1")
    assert not writer.loaded  # constructing loads nothing
    assert writer.write([]) == [] and not writer.loaded


# ----------------------------------------------------------------------------------------------- sampling


def test_same_seeds_give_the_same_outputs(writer: LLMPromptWriter, tiny_model: Path) -> None:
    identities = _identities()
    first = writer.write(identities)
    again = writer.write(identities)
    other = LLMPromptWriter(
        model_id=str(tiny_model), dtype="float32", device="cpu", max_new_tokens=MAX_NEW_TOKENS, max_retries=1
    ).write(identities)
    for a, b, c in zip(first, again, other, strict=True):
        assert a.raw_output == b.raw_output == c.raw_output
        assert a.prompt == b.prompt == c.prompt
        assert a.params == b.params == c.params
    # Different identity seeds sample different text.
    assert len({r.raw_output for r in first}) == len(first)


def test_a_row_depends_only_on_its_own_seed(writer: LLMPromptWriter) -> None:
    identities = _identities()
    together = writer.write(identities)
    for identity, batched in zip(identities, together, strict=True):
        (alone,) = writer.write([identity])
        assert alone.raw_output == batched.raw_output
        assert alone.params == batched.params
    # The same holds for the sampler itself, with unequal prompt lengths in one left-padded batch.
    chats = ["short", "a much longer prompt about a subject with black hair and almond eyes", "mid length one"]
    seeds = [5, 6, 7]
    batched_texts = writer._sample(chats, seeds)
    for chat, seed, completion in zip(chats, seeds, batched_texts, strict=True):
        assert writer._sample([chat], [seed]) == [completion]


def test_batch_size_does_not_change_results(tiny_model: Path, writer: LLMPromptWriter) -> None:
    small_batches = LLMPromptWriter(
        model_id=str(tiny_model),
        dtype="float32",
        device="cpu",
        max_new_tokens=MAX_NEW_TOKENS,
        max_retries=1,
        batch_size=2,
    )
    assert [r.raw_output for r in small_batches.write(_identities())] == [
        r.raw_output for r in writer.write(_identities())
    ]


def test_random_weights_fall_back_to_the_template(writer: LLMPromptWriter) -> None:
    identities = _identities()
    for identity, result in zip(identities, writer.write(identities), strict=True):
        assert result.fallback is True
        assert (result.writer, result.writer_version) == ("llm", "1")
        assert result.prompt == template_prompt(identity.attributes, identity.subject)
        assert result.raw_output  # the last attempt's raw text is kept for inspection
        params = result.params
        # max_retries counts retries: one first attempt plus max_retries more.
        assert params["attempts"] == writer.max_retries + 1 == 2
        assert len(params["failure_reasons"]) == 2
        assert params["failure_reasons"][0].startswith("attempt 0: ")
        assert f"no end of turn within max_new_tokens={MAX_NEW_TOKENS}" in params["failure_reasons"][-1]
        assert params["seed"] == stream_seed(identity.seed, "prompt", writer.max_retries)
        assert params["revision"] is None  # a local directory has no hub commit
        assert {k: params[k] for k in ("model_id", "dtype", "device", "trigger")} == {
            "model_id": writer.model_id,
            "dtype": "float32",
            "device": "cpu",
            "trigger": "",
        }
        assert (params["temperature"], params["top_p"], params["top_k"]) == (0.7, 0.8, 20)


def test_stop_tokens_end_a_row(tiny_model: Path) -> None:
    writer = LLMPromptWriter(model_id=str(tiny_model), dtype="float32", device="cpu", max_retries=0)
    writer.load()
    writer._stop_ids = frozenset(range(len(writer._tokenizer)))  # every token ends the turn at once
    (completion,) = writer._sample(["hello"], [1])
    assert completion == _Completion(text="", stopped=True)
    (result,) = writer.write([_identities()[0]])
    assert result.fallback and result.params["attempts"] == 1
    assert result.params["failure_reasons"] == ["attempt 0: empty caption"]


class _ScriptedWriter(LLMPromptWriter):
    """The real writer with its sampler replaced by canned text per attempt: tests the retry bookkeeping."""

    def __init__(self, script: dict[int, list[str]], **kwargs: object) -> None:
        super().__init__(**kwargs)  # type: ignore[arg-type]
        self.script = script
        self.calls: list[list[int]] = []

    def load(self) -> None:  # no model needed for bookkeeping
        class _Chat:
            @staticmethod
            def apply_chat_template(messages: list[dict[str, str]], **_: object) -> str:
                return messages[-1]["content"]

        self._tokenizer = _Chat()
        self._device = "cpu"

    def _sample(self, prompts: Sequence[str], seeds: Sequence[int]) -> list[_Completion]:
        self.calls.append(list(seeds))
        attempt = len(self.calls) - 1
        return [_Completion(self.script[attempt][0], True) for _ in prompts]


def test_a_valid_retry_is_accepted_with_its_seed_and_history() -> None:
    identity = _identities()[0]
    writer = _ScriptedWriter(
        {0: ["\u00c9l tiene 30-39."], 1: ["Photograph of a man. Aged 30-39, with short black hair."]},
        trigger="s7ll2f4h",
        max_retries=3,
    )
    (result,) = writer.write([identity])
    assert result.fallback is False
    assert result.prompt == (f"s7ll2f4h, {OPENING.format(subject='man')} Aged 30-39, with short black hair. {CLOSING}")
    assert result.raw_output == "Photograph of a man. Aged 30-39, with short black hair."
    assert result.params["attempts"] == 2
    assert result.params["seed"] == stream_seed(identity.seed, "prompt", 1)
    assert writer.calls == [[stream_seed(identity.seed, "prompt", 0)], [stream_seed(identity.seed, "prompt", 1)]]
    (reason,) = result.params["failure_reasons"]
    assert reason.startswith("attempt 0: non-ASCII") and "missing hair_colors='Black'" in reason
    assert result.params["trigger"] == "s7ll2f4h"


def test_top_k_one_and_tiny_top_p_are_greedy(tiny_model: Path) -> None:
    def sampler(**kwargs: float) -> LLMPromptWriter:
        w = LLMPromptWriter(model_id=str(tiny_model), dtype="float32", device="cpu", max_new_tokens=8, **kwargs)
        w.load()
        return w

    chats = ["Photograph of a man.", "hair"]
    greedy = sampler(temperature=0.0)._sample(chats, [1, 2])
    assert greedy == sampler(temperature=0.0)._sample(chats, [3, 4])  # seeds do not matter
    assert sampler(top_k=1)._sample(chats, [5, 6]) == greedy
    assert sampler(top_k=0, top_p=1e-9)._sample(chats, [7, 8]) == greedy
    # Full sampling with different seeds does differ.
    full = sampler(top_k=0, top_p=1.0, temperature=1.0)
    assert full._sample(chats, [1, 2]) != full._sample(chats, [3, 4])
