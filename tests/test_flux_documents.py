"""The FLUX document generator on a tiny random-weight FluxPipeline built locally: the real diffusers code path."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from synid_assets.core.dataset.layout import png_bytes
from synid_assets.core.dataset.seeds import identity_seed, stream_seed
from synid_assets.core.generation.flux_documents import FluxDocumentGenerator, ModelLoadError
from synid_assets.core.generation.template_prompts import template_prompt
from synid_assets.core.generation.types import DocumentGenerator, DocumentRequest, IdentityRecord
from synid_assets.random_models.flux import build_tiny_flux, build_tiny_lora, save_random_flux_lora

REPO = Path(__file__).resolve().parents[1]
PARAM_FIELDS = {
    "generator",
    "version",
    "model_id",
    "revision",
    "lora",
    "lora_weight_name",
    "lora_scale",
    "prompt",
    "seed",
    "steps",
    "guidance",
    "width",
    "height",
    "dtype",
    "transformer_storage_dtype",
    "scheduler",
    "max_sequence_length",
    "diffusers_version",
    "torch_version",
    "license",
}
ATTRIBUTES = [
    {"ages": "30-39", "origins": "Japanese", "hair_colors": "Black", "eyewear": "Clear non-reflective eyeglasses"},
    {"ages": "60-69", "origins": "Nigerian", "hair_colors": "Gray", "facial_hair": "Light beard"},
    {"ages": "20-29", "origins": "Brazilian", "hair_colors": "Brown", "face_shape": "Oval"},
    {"ages": "40-49", "origins": "Norwegian", "hair_colors": "Blond", "nose_shape": "Straight"},
]


def make_request(index: int, batch: str = "batch-00000", dataset_seed: int = 7) -> DocumentRequest:
    seed = identity_seed(dataset_seed, batch, index)
    attributes = ATTRIBUTES[index % len(ATTRIBUTES)]
    subject = ("man", "woman")[index % 2]
    identity = IdentityRecord(f"{batch}-{index:04d}", batch, index, seed, attributes, subject)
    return DocumentRequest(
        identity=identity, prompt=template_prompt(attributes, subject), seed=stream_seed(seed, "document")
    )


def tiny(model_dir: Path, **kwargs) -> FluxDocumentGenerator:
    options = {"dtype": "float32", "device": "cpu", "width": 32, "height": 32, "steps": 2, "batch_size": 2}
    options.update(kwargs)
    return FluxDocumentGenerator(model_id=str(model_dir), **options)


def requests_with_same_guidance(count: int) -> list[DocumentRequest]:
    """Requests whose identities draw the same guidance, so the generator batches them into one pipeline call."""
    probe = FluxDocumentGenerator()
    by_guidance: dict[float, list[DocumentRequest]] = {}
    for index in range(200):
        request = make_request(index)
        group = by_guidance.setdefault(probe.guidance_for(request.identity.seed), [])
        group.append(request)
        if len(group) == count:
            return group
    raise AssertionError("no guidance value drawn often enough")


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_flux(tmp_path_factory.mktemp("tiny_flux"))


@pytest.fixture(scope="module")
def generator(model_dir: Path) -> FluxDocumentGenerator:
    gen = tiny(model_dir)
    gen.load()
    return gen


@pytest.fixture(scope="module")
def first_images(generator: FluxDocumentGenerator):
    requests = [make_request(i) for i in range(3)]
    return requests, generator.generate(requests)


def test_is_a_document_generator_and_construction_loads_nothing(model_dir: Path) -> None:
    gen = tiny(model_dir)
    assert isinstance(gen, DocumentGenerator)
    assert gen.name == "flux" and gen.version == "1"
    assert not gen.loaded
    code = (
        "import sys; from synid_assets.core.generation.flux_documents import FluxDocumentGenerator as F; F(); "
        "assert 'diffusers' not in sys.modules and 'torch' not in sys.modules, 'heavy import at module level'"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO)


def test_images_have_requested_size_and_complete_json_params(first_images) -> None:
    requests, images = first_images
    assert len(images) == len(requests)
    for request, item in zip(requests, images, strict=True):
        assert item.image.size == (32, 32) and item.image.mode == "RGB"
        params = item.params
        assert set(params) >= PARAM_FIELDS, PARAM_FIELDS - set(params)
        assert json.loads(json.dumps(params)) == params
        assert params["prompt"] == request.prompt and params["seed"] == request.seed
        assert params["generator"] == "flux" and params["steps"] == 2
        assert (params["width"], params["height"]) == (32, 32)
        assert params["dtype"] == "float32" and params["transformer_storage_dtype"] is None
        assert params["scheduler"] == "FlowMatchEulerDiscreteScheduler"
        assert params["revision"] is None  # a local directory, not a hub snapshot
        assert params["license"] == "see model card"
        assert params["lora"] is None and params["max_sequence_length"] == 512
        assert params["diffusers_version"] and params["torch_version"] == torch.__version__


def test_guidance_is_drawn_from_the_identity_seed_and_rounded(first_images, generator) -> None:
    requests, images = first_images
    for request, item in zip(requests, images, strict=True):
        assert item.params["guidance"] == generator.guidance_for(request.identity.seed)
    values = [generator.guidance_for(identity_seed(1, "batch-00000", i)) for i in range(300)]
    assert all(1.7 <= v <= 2.5 for v in values)
    assert all(abs(v * 10 - round(v * 10)) < 1e-9 for v in values)
    assert set(values) == {round(1.7 + 0.1 * k, 1) for k in range(9)}
    assert values == [generator.guidance_for(identity_seed(1, "batch-00000", i)) for i in range(300)]


def test_same_seeds_give_identical_png_bytes_across_loads(model_dir: Path, first_images) -> None:
    requests, images = first_images
    again = tiny(model_dir).generate(requests)
    assert [png_bytes(a.image) for a in images] == [png_bytes(b.image) for b in again]
    assert len({png_bytes(a.image) for a in images}) == len(images)  # different seeds, different images


def assert_same_image(a, b) -> None:
    """Images made in batches of different composition: CPU matrix kernels may block the work differently,
    which can move a few pixels by one level; anything that depends on the wrong seed differs everywhere."""
    x, y = np.asarray(a, dtype=np.int16), np.asarray(b, dtype=np.int16)
    assert x.shape == y.shape
    difference = np.abs(x - y)
    assert difference.max() <= 2 and (difference == 0).mean() >= 0.99


def test_an_image_depends_only_on_its_own_seed(model_dir: Path, generator, monkeypatch: pytest.MonkeyPatch) -> None:
    requests = requests_with_same_guidance(3)
    batched = tiny(model_dir, batch_size=3)
    calls: list[int] = []
    original = batched._run

    def counting_run(prompts, *args, **kwargs):
        calls.append(len(prompts))
        return original(prompts, *args, **kwargs)

    monkeypatch.setattr(batched, "_run", counting_run)
    together = batched.generate(requests)
    assert calls == [3]  # one pipeline call for the three identities
    alone = [generator.generate([request])[0] for request in requests]
    # float32 on CPU: batched and single-image runs give the same image (bytes, up to kernel rounding).
    for a, b in zip(alone, together, strict=True):
        assert_same_image(a.image, b.image)


def test_mixed_guidances_are_grouped_and_returned_in_request_order(
    model_dir: Path, first_images, monkeypatch: pytest.MonkeyPatch
) -> None:
    requests, images = first_images
    extra = requests_with_same_guidance(2)
    mixed = [extra[0], requests[0], extra[1], requests[1], requests[2]]
    gen = tiny(model_dir, batch_size=2)
    guidances: list[tuple[float, int]] = []
    original = gen._run

    def recording_run(prompts, seeds, guidance, *args, **kwargs):
        guidances.append((guidance, len(prompts)))
        return original(prompts, seeds, guidance, *args, **kwargs)

    monkeypatch.setattr(gen, "_run", recording_run)
    out = gen.generate(mixed)
    assert [item.params["seed"] for item in out] == [r.seed for r in mixed]
    for guidance, size in guidances:
        assert size <= 2
        assert len({g for g, _ in guidances if g == guidance}) == 1
    # each guidance value's requests went through in ceil(n / batch_size) calls
    expected: dict[float, int] = {}
    for request in mixed:
        key = gen.guidance_for(request.identity.seed)
        expected[key] = expected.get(key, 0) + 1
    assert sorted(guidances) == sorted((g, min(2, n - 2 * k)) for g, n in expected.items() for k in range((n + 1) // 2))
    by_seed = {item.params["seed"]: item.image for item in images}
    for item in out:
        if item.params["seed"] in by_seed:
            assert_same_image(item.image, by_seed[item.params["seed"]])


def test_regenerate_reproduces_the_bytes(model_dir: Path, first_images, generator) -> None:
    _, images = first_images
    for item in images[:2]:  # regenerated alone, made in a batch
        assert_same_image(generator.regenerate(item.params), item.image)
    rebuilt = FluxDocumentGenerator.from_params(images[0].params, batch_size=1)
    assert rebuilt.settings == generator.settings
    assert_same_image(rebuilt.regenerate(images[0].params), images[0].image)
    with pytest.raises(ValueError, match="dtype"):
        generator.regenerate({**images[0].params, "dtype": "bfloat16"})


def test_settings_name_everything_that_changes_the_image(model_dir: Path) -> None:
    settings = tiny(model_dir).settings
    content = "model_id revision lora lora_weight_name lora_scale width height steps guidance_min guidance_max dtype"
    assert set(settings) >= {*content.split(), "transformer_storage_dtype", "max_sequence_length", "noise_device"}
    assert json.loads(json.dumps(settings)) == settings
    assert settings["noise_device"] == "cpu"
    assert tiny(model_dir, batch_size=7).settings == settings  # batching is not part of the image's identity
    assert tiny(model_dir, steps=3).settings != settings
    assert tiny(model_dir, lora="x", lora_scale=0.5).settings != settings


def test_missing_model_directory_is_a_model_load_error(tmp_path: Path) -> None:
    missing = tmp_path / "no-such-flux"
    with pytest.raises(ModelLoadError, match="no-such-flux") as error:
        tiny(missing).load()
    assert "synid models download" in str(error.value)
    empty = tmp_path / "empty-dir"
    empty.mkdir()
    with pytest.raises(ModelLoadError, match="model_index.json"):
        tiny(empty).load()


def test_uncached_hub_model_is_a_model_load_error_naming_it_and_how_to_fetch(tmp_path: Path) -> None:
    gen = FluxDocumentGenerator(cache_dir=str(tmp_path / "hf"), local_files_only=True, device="cpu")
    with pytest.raises(ModelLoadError) as error:
        gen.load()
    message = str(error.value)
    assert "black-forest-labs/FLUX.1-dev" in message
    assert "synid models download" in message and "HF_TOKEN" in message
    assert isinstance(error.value, RuntimeError)


def test_lora_changes_the_output_and_is_recorded(model_dir: Path, tmp_path: Path, first_images) -> None:
    requests, images = first_images
    lora_dir = build_tiny_lora(model_dir, tmp_path / "lora")
    weight = "pytorch_lora_weights.safetensors"
    assert (lora_dir / weight).is_file()
    with_lora = tiny(model_dir, lora=str(lora_dir), lora_weight_name=weight, lora_scale=1.0)
    out = with_lora.generate(requests[:2])
    for base, item in zip(images[:2], out, strict=True):
        assert png_bytes(item.image) != png_bytes(base.image)
        assert item.params["lora"] == str(lora_dir)
        assert item.params["lora_weight_name"] == weight and item.params["lora_scale"] == 1.0
    assert_same_image(with_lora.regenerate(out[0].params), out[0].image)
    # scale 0 switches the adapter's contribution off: the base model's bytes again
    off = tiny(model_dir, lora=str(lora_dir), lora_weight_name=weight, lora_scale=0.0).generate(requests[:1])
    assert_same_image(off[0].image, images[0].image)
    with pytest.raises(ModelLoadError, match="LoRA"):
        tiny(model_dir, lora=str(tmp_path / "no-lora"), lora_weight_name=weight).load()


def test_a_pipeline_built_in_memory_gets_the_same_setup_as_a_loaded_one(model_dir: Path, first_images) -> None:
    """use_pipeline (what the memory benchmark measures) is load()'s own setup: the same bytes from the same weights."""
    from diffusers import FluxPipeline

    requests, images = first_images
    gen = tiny(model_dir)
    gen.use_pipeline(FluxPipeline.from_pretrained(model_dir), resolved_revision="abc123")
    again = gen.generate(requests)
    assert [png_bytes(a.image) for a in again] == [png_bytes(b.image) for b in images]
    assert again[0].params["revision"] == "abc123"


def test_random_lora_written_from_an_in_memory_transformer_loads_and_changes_the_image(
    model_dir: Path, tmp_path: Path, first_images
) -> None:
    from diffusers import FluxPipeline

    requests, images = first_images
    pipe = FluxPipeline.from_pretrained(model_dir)
    before = {name: p.clone() for name, p in pipe.transformer.named_parameters()}
    lora_dir = save_random_flux_lora(pipe.transformer, tmp_path / "lora", rank=4, std=0.5)
    assert {name: p for name, p in pipe.transformer.named_parameters()}.keys() == before.keys()  # not wrapped
    gen = tiny(model_dir, lora=str(lora_dir))
    gen.use_pipeline(pipe)
    assert any(name.endswith("lora_A.synid.weight") for name, _ in pipe.transformer.named_parameters())
    changed = gen.generate(requests[:1])
    assert png_bytes(changed[0].image) != png_bytes(images[0].image)


@pytest.mark.gpu
def test_cuda_24gb_settings_fp8_storage_model_offload_and_lora(model_dir: Path, tmp_path: Path) -> None:
    """flux-24gb.yaml's memory settings together: LoRA + float8 layerwise storage + model CPU offload."""
    import numpy as np

    lora_dir = build_tiny_lora(model_dir, tmp_path / "lora")
    requests = requests_with_same_guidance(2)
    kwargs = {"dtype": "bfloat16", "lora": str(lora_dir), "lora_weight_name": "pytorch_lora_weights.safetensors"}
    offloaded = tiny(model_dir, device="cuda", offload="model", transformer_storage_dtype="float8_e4m3fn", **kwargs)
    out = offloaded.generate(requests)
    assert [item.params["execution"]["offload"] for item in out] == ["model", "model"]
    assert offloaded._pipe.transformer.device.type == "cpu"  # offloaded again after the call
    on_gpu = tiny(model_dir, device="cuda", transformer_storage_dtype="float8_e4m3fn", **kwargs).generate(requests)
    for a, b in zip(out, on_gpu, strict=True):  # offload moves weights, it does not change the arithmetic
        diff = np.abs(np.asarray(a.image, dtype=np.int16) - np.asarray(b.image, dtype=np.int16))
        assert diff.mean() < 2.0


@pytest.mark.gpu
def test_cuda_bfloat16_compiled_is_deterministic_and_close_across_batching(model_dir: Path) -> None:
    import numpy as np

    requests = requests_with_same_guidance(3)
    kwargs = {"dtype": "bfloat16", "device": "cuda", "compile": True, "attention_backend": "native"}
    gen = tiny(model_dir, batch_size=3, **kwargs)
    first = gen.generate(requests)
    second = gen.generate(requests)
    assert [png_bytes(a.image) for a in first] == [png_bytes(b.image) for b in second]
    assert first[0].params["noise_device"] == "cuda"
    single = tiny(model_dir, batch_size=1, **kwargs).generate(requests)
    for a, b in zip(first, single, strict=True):
        diff = np.abs(np.asarray(a.image, dtype=np.int16) - np.asarray(b.image, dtype=np.int16))
        assert diff.mean() < 2.0  # bf16 batched kernels may round differently; the images stay the same
