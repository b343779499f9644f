"""The FLUX.1 Kontext live generator on a tiny random-weight FluxKontextPipeline (synid_assets/random_models)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from synid_assets.core.dataset.layout import png_bytes
from synid_assets.core.dataset.seeds import identity_seed, rng_for, stream_seed
from synid_assets.core.errors import ModelLoadError
from synid_assets.core.generation.kontext import (
    CATEGORIES,
    DEFAULT_LISTS,
    IDENTITY_CLAUSE,
    KontextLiveGenerator,
    compose_instruction,
)
from synid_assets.core.generation.types import IdentityRecord, LiveGenerator, LiveRequest
from synid_assets.random_models.flux import build_tiny_flux

PARAM_FIELDS = {
    "generator", "version", "model_id", "revision", "license", "seed", "steps", "guidance", "width", "height",
    "dtype", "scheduler", "instruction", "choices", "document_path", "document_sha256", "diffusers_version",
    "torch_version",
}  # fmt: skip


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """One intra-op thread: the tiny kernels gain nothing from more, and on a loaded machine threads oversubscribe."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def kontext_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """tiny_flux's FluxPipeline components, saved as a FluxKontextPipeline (the same components)."""
    from diffusers import FluxKontextPipeline, FluxPipeline

    root = tmp_path_factory.mktemp("kontext")
    flux = FluxPipeline.from_pretrained(build_tiny_flux(root / "flux"))
    FluxKontextPipeline.from_pipe(flux).save_pretrained(root / "kontext")
    return root / "kontext"


@pytest.fixture(scope="module")
def documents(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    from PIL import Image

    root = tmp_path_factory.mktemp("documents")
    paths = []
    for index in range(2):
        pixels = np.random.default_rng(index).integers(0, 256, (48, 40, 3), dtype=np.uint8)
        paths.append(root / f"doc{index}.png")
        Image.fromarray(pixels).save(paths[-1])
    return paths


def make_request(index: int, document: Path, live_index: int = 0) -> LiveRequest:
    batch = "batch-00000"
    seed = identity_seed(7, batch, index)
    identity = IdentityRecord(f"{batch}-{index:04d}", batch, index, seed, {}, "person")
    return LiveRequest(identity, "unused", live_index, stream_seed(seed, "live", live_index), str(document), None)


def tiny(model_dir: Path, **kwargs) -> KontextLiveGenerator:
    options = {"width": 32, "height": 32, "steps": 2, "dtype": "float32", "device": "cpu", "batch_size": 2}
    options.update(kwargs)
    return KontextLiveGenerator(model_id=str(model_dir), **options)


# ---------------------------------------------------------------- instructions, no model


def test_compose_instruction_draws_one_option_per_category_and_keeps_identity():
    instruction, choices = compose_instruction(np.random.default_rng(3), DEFAULT_LISTS)
    assert list(choices) == list(CATEGORIES)
    for category, choice in choices.items():
        assert choice in DEFAULT_LISTS[category] and choice in instruction
    assert instruction.startswith("Show this person ") and instruction.endswith(IDENTITY_CLAUSE)
    assert "same identity" in IDENTITY_CLAUSE and "same facial features" in IDENTITY_CLAUSE
    assert compose_instruction(np.random.default_rng(3), DEFAULT_LISTS) == (instruction, choices)


def test_compose_instruction_with_custom_and_empty_lists():
    lists = {"expression": ["frowning"], "pose": [], "scene": ["on a beach"]}
    instruction, choices = compose_instruction(np.random.default_rng(0), lists)
    assert instruction == f"Show this person frowning, on a beach. {IDENTITY_CLAUSE}"
    assert choices == {"expression": "frowning", "pose": None, "scene": "on a beach", "lighting": None, "camera": None}
    assert compose_instruction(np.random.default_rng(0), {}) == (IDENTITY_CLAUSE, dict.fromkeys(CATEGORIES))


def test_instruction_is_drawn_from_the_seed():
    gen = KontextLiveGenerator(device="cpu")
    assert isinstance(gen, LiveGenerator) and gen.name == "kontext"
    assert gen.instruction_for(11) == gen.instruction_for(11)
    assert gen.instruction_for(11) == compose_instruction(rng_for(11, "kontext"), DEFAULT_LISTS)
    drawn = {gen.instruction_for(seed)[0] for seed in range(30)}
    assert len(drawn) > 10
    custom = KontextLiveGenerator(device="cpu", lighting=["by candle light"], cameras=[])
    _, choices = custom.instruction_for(11)
    assert choices["lighting"] == "by candle light" and choices["camera"] is None
    assert custom.settings["lists"]["lighting"] == ["by candle light"]


def test_output_size_follows_the_document_aspect_ratio():
    gen = KontextLiveGenerator(device="cpu")
    assert gen.output_size((512, 512)) == (1024, 1024)
    width, height = gen.output_size((600, 800))  # a portrait document: a portrait Kontext resolution
    assert height > width and width % 16 == 0 and height % 16 == 0
    assert KontextLiveGenerator(device="cpu", width=64, height=48).output_size((600, 800)) == (64, 48)
    with pytest.raises(ValueError):
        KontextLiveGenerator(width=64)


# ---------------------------------------------------------------- the tiny pipeline


def test_generation_size_determinism_params_and_regenerate(kontext_dir: Path, documents: list[Path]):
    gen = tiny(kontext_dir)
    requests = [make_request(0, documents[0]), make_request(1, documents[1]), make_request(0, documents[0], 1)]
    first = gen.generate(requests)
    assert [item.image.size for item in first] == [(32, 32)] * 3
    data = [png_bytes(item.image) for item in first]
    assert len(set(data)) == 3
    assert [png_bytes(item.image) for item in gen.generate(requests)] == data  # the same batches: the same bytes
    # Alone instead of in a batch of two: the same image up to float rounding of batched CPU kernels.
    alone = np.asarray(gen.generate([requests[1]])[0].image, dtype=np.int16)
    assert np.abs(alone - np.asarray(first[1].image, dtype=np.int16)).max() <= 2

    params = first[1].params
    assert set(params) >= PARAM_FIELDS
    instruction, choices = gen.instruction_for(requests[1].seed)
    assert params["instruction"] == instruction and params["choices"] == choices
    assert params["document_path"] == str(documents[1]) and len(params["document_sha256"]) == 64
    assert params["license"] == "see model card"  # a local directory; FLUX.1-Kontext-dev's hub id names its licence
    restored = json.loads(json.dumps(first[2].params))  # r2 was made alone: regenerate() gives its exact bytes
    assert png_bytes(gen.regenerate(restored)) == data[2]
    assert png_bytes(KontextLiveGenerator.from_params(restored).regenerate(restored)) == data[2]


def test_regenerate_refuses_a_changed_document(kontext_dir: Path, documents: list[Path], tmp_path: Path):
    from PIL import Image

    copy = tmp_path / "doc.png"
    copy.write_bytes(documents[0].read_bytes())
    gen = tiny(kontext_dir, batch_size=1)
    params = gen.generate([make_request(3, copy)])[0].params
    Image.new("RGB", (40, 48), "white").save(copy)
    with pytest.raises(ValueError, match="changed"):
        gen.regenerate(params)


def test_missing_model_or_document(tmp_path: Path, documents: list[Path]):
    with pytest.raises(ModelLoadError, match="does not exist"):
        tiny(tmp_path / "nope").load()
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelLoadError, match="model_index.json"):
        tiny(tmp_path / "empty").load()
    with pytest.raises(FileNotFoundError, match="batch-00000-0001"):
        tiny(tmp_path / "nope").generate([make_request(1, tmp_path / "missing.png")])


@pytest.mark.gpu
def test_cuda_bfloat16_generation(kontext_dir: Path, documents: list[Path]):
    gen = tiny(kontext_dir, dtype="bfloat16", device="cuda")
    out = gen.generate([make_request(0, documents[0])])
    assert out[0].image.size == (32, 32)
    assert png_bytes(gen.regenerate(out[0].params)) == png_bytes(out[0].image)
