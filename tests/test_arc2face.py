"""The Arc2Face live generator on a tiny random-weight Arc2Face built locally: the real diffusers code path."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from synid_assets.core.dataset.layout import png_bytes
from synid_assets.core.dataset.seeds import identity_seed, stream_seed
from synid_assets.core.errors import ModelLoadError
from synid_assets.core.generation.arc2face import Arc2FaceLiveGenerator
from synid_assets.core.generation.arc2face_conditioning import (
    ARCFACE_DIM,
    ID_PROMPT,
    normalize_embedding,
    replace_id_token,
)
from synid_assets.core.generation.types import IdentityRecord, LiveGenerator, LiveRequest
from synid_assets.random_models.arc2face import TEXT_WIDTH, build_tiny_arc2face, build_tiny_lcm_lora

PARAM_FIELDS = {
    "generator", "version", "model_id", "base_model_id", "revision", "base_revision", "seed", "steps", "guidance",
    "width", "height", "dtype", "scheduler", "lcm_lora", "prompt", "embedding_source", "embedding",
    "diffusers_version", "torch_version", "license",
}  # fmt: skip


def arcface_vector(index: int) -> list[float]:
    """A stand-in ArcFace embedding (not normalized: the generator normalizes)."""
    return [float(x) for x in np.random.default_rng(1000 + index).normal(size=ARCFACE_DIM) * 20.0]


def make_request(index: int, live_index: int = 0, embedding: list[float] | None | str = "default") -> LiveRequest:
    batch = "batch-00000"
    seed = identity_seed(7, batch, index)
    identity = IdentityRecord(f"{batch}-{index:04d}", batch, index, seed, {}, "person")
    vector = arcface_vector(index) if embedding == "default" else embedding
    return LiveRequest(
        identity=identity,
        prompt="unused by arc2face",
        live_index=live_index,
        seed=stream_seed(seed, "live", live_index),
        document_path=f"/data/batches/{batch}/documents/{identity.identity_id}.png",
        document_embedding=vector,
    )


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """One intra-op thread: the tiny kernels gain nothing from more, and on a loaded machine threads oversubscribe."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def tiny_dirs(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    return build_tiny_arc2face(tmp_path_factory.mktemp("arc2face"))


def tiny(dirs: tuple[Path, Path], **kwargs) -> Arc2FaceLiveGenerator:
    options = {"width": 32, "height": 32, "steps": 2, "dtype": "float32", "device": "cpu", "batch_size": 2}
    options.update(kwargs)
    return Arc2FaceLiveGenerator(model_id=str(dirs[0]), base_model_id=str(dirs[1]), **options)


@pytest.fixture(scope="module")
def generator(tiny_dirs: tuple[Path, Path]) -> Arc2FaceLiveGenerator:
    gen = tiny(tiny_dirs)
    gen.load()
    return gen


# ---------------------------------------------------------------- conditioning, no model


def test_replace_id_token_puts_the_padded_vector_at_the_id_position_only():
    torch.manual_seed(0)
    embeds = torch.randn(2, 9, TEXT_WIDTH)
    ids = torch.tensor([[0, 5, 6, 7, 42, 8, 1, 1, 1], [0, 42, 5, 6, 7, 8, 1, 1, 1]])
    vectors = torch.randn(2, ARCFACE_DIM)
    out = replace_id_token(embeds, ids, 42, vectors)
    for row, position in ((0, 4), (1, 1)):
        assert torch.equal(out[row, position, :ARCFACE_DIM], vectors[row])
        assert torch.equal(out[row, position, ARCFACE_DIM:], torch.zeros(TEXT_WIDTH - ARCFACE_DIM))
        others = [p for p in range(9) if p != position]
        assert torch.equal(out[row, others], embeds[row, others])
    assert not torch.equal(out, embeds) and embeds.shape == out.shape  # the input is left unchanged


def test_replace_id_token_rejects_bad_inputs():
    embeds = torch.zeros(1, 4, TEXT_WIDTH)
    with pytest.raises(ValueError, match="exactly once"):
        replace_id_token(embeds, torch.tensor([[0, 5, 6, 1]]), 42, torch.zeros(1, ARCFACE_DIM))
    with pytest.raises(ValueError, match="exactly once"):
        replace_id_token(embeds, torch.tensor([[0, 42, 42, 1]]), 42, torch.zeros(1, ARCFACE_DIM))
    with pytest.raises(ValueError, match="does not fit"):
        replace_id_token(embeds, torch.tensor([[0, 42, 6, 1]]), 42, torch.zeros(1, TEXT_WIDTH + 1))


def test_normalize_embedding():
    vector = normalize_embedding([3.0, 4.0] + [0.0] * 510)
    assert vector.dtype == np.float32 and np.isclose(np.linalg.norm(vector), 1.0)
    with pytest.raises(ValueError):
        normalize_embedding([0.0] * ARCFACE_DIM)


def test_protocol_and_settings_without_loading():
    gen = Arc2FaceLiveGenerator(device="cpu")
    assert isinstance(gen, LiveGenerator) and gen.name == "arc2face" and not gen.loaded
    assert gen.settings["scheduler"] == "DPMSolverMultistepScheduler"
    assert (gen.settings["steps"], gen.settings["guidance"]) == (25, 3.0)
    lcm = Arc2FaceLiveGenerator(device="cpu", lcm_lora="latent-consistency/lcm-lora-sdv1-5")
    assert (lcm.scheduler, lcm.steps, lcm.guidance) == ("LCMScheduler", 4, 1.0)
    with pytest.raises(ValueError):
        Arc2FaceLiveGenerator(width=100)


# ---------------------------------------------------------------- the tiny model


def test_prompt_embeds_follow_the_vector(generator: Arc2FaceLiveGenerator):
    a, b = np.array(arcface_vector(0)), np.array(arcface_vector(1))
    embeds = generator.id_prompt_embeds(np.stack([a, b, a * 3.0]))
    assert embeds.shape == (3, 77, TEXT_WIDTH)
    assert torch.equal(embeds[0], embeds[2])  # the same direction: the vector is normalized first
    assert not torch.allclose(embeds[0], embeds[1])
    # Causal attention: tokens before "id" (<bos> photo of a) do not see the vector, every later token does.
    tokenizer = generator._pipe.tokenizer
    position = tokenizer(ID_PROMPT).input_ids.index(generator._id_token_id)
    assert position == 4
    assert torch.equal(embeds[0, :position], embeds[1, :position])
    assert not torch.allclose(embeds[0, position:], embeds[1, position:])
    # The negative conditioning is the empty prompt through the plain text path.
    empty = tokenizer("", padding="max_length", max_length=77, return_tensors="pt").input_ids
    with torch.inference_mode():
        assert torch.equal(generator._negative, generator._pipe.text_encoder(empty)[0])


def max_pixel_difference(a, b) -> int:
    return int(np.abs(np.asarray(a, dtype=np.int16) - np.asarray(b, dtype=np.int16)).max())


def test_generation_is_sized_deterministic_batch_independent_and_regenerable(generator: Arc2FaceLiveGenerator):
    requests = [make_request(0), make_request(1), make_request(0, live_index=1)]
    first = generator.generate(requests)  # chunks [r0, r1], [r2]
    assert [item.image.size for item in first] == [(32, 32)] * 3
    data = [png_bytes(item.image) for item in first]
    assert len(set(data)) == 3  # different identities and different seeds give different images
    # The same batches again: the same bytes.
    assert [png_bytes(item.image) for item in generator.generate(requests)] == data
    # In other batches: the same image up to float rounding of batched CPU kernels (at most a level or two of 255;
    # usually identical bytes, but not guaranteed).
    again = generator.generate([requests[2], requests[0]])  # r2 now shares a batch with r0, r0 leads
    assert max_pixel_difference(again[0].image, first[2].image) <= 2
    assert max_pixel_difference(again[1].image, first[0].image) <= 2

    params = first[1].params
    assert set(params) >= PARAM_FIELDS
    assert params["embedding"] == arcface_vector(1) and params["prompt"] == ID_PROMPT
    assert params["embedding_source"]["document_path"] == requests[1].document_path
    assert (params["scheduler"], params["steps"], params["guidance"]) == ("DPMSolverMultistepScheduler", 2, 3.0)
    assert "MIT" in params["license"]
    # regenerate() makes one image alone: exact bytes for an image made alone, rounding-close for a batched one.
    alone = json.loads(json.dumps(first[2].params))  # JSON round trip, as the sidecar stores it
    assert png_bytes(generator.regenerate(alone)) == data[2]
    assert png_bytes(Arc2FaceLiveGenerator.from_params(alone).regenerate(alone)) == data[2]
    assert max_pixel_difference(generator.regenerate(json.loads(json.dumps(params))), first[1].image) <= 2
    with pytest.raises(ValueError, match="do not match"):
        generator.regenerate({**params, "steps": 3})


def test_missing_or_wrong_embedding_names_the_identity(generator: Arc2FaceLiveGenerator):
    with pytest.raises(ValueError, match="batch-00000-0003.*insightface"):
        generator.generate([make_request(2), make_request(3, embedding=None)])
    with pytest.raises(ValueError, match="batch-00000-0004.*128-d"):
        generator.generate([make_request(4, embedding=[0.1] * 128)])
    with pytest.raises(ValueError, match="batch-00000-0005.*zero"):
        generator.generate([make_request(5, embedding=[0.0] * ARCFACE_DIM)])


def test_missing_model_dirs_raise_model_load_error(tmp_path: Path, tiny_dirs: tuple[Path, Path]):
    with pytest.raises(ModelLoadError, match="does not exist"):
        tiny((tmp_path / "nope", tiny_dirs[1])).load()
    with pytest.raises(ModelLoadError, match="no encoder"):
        (tmp_path / "partial" / "arc2face").mkdir(parents=True)
        tiny((tmp_path / "partial", tiny_dirs[1])).load()
    with pytest.raises(ModelLoadError, match="does not exist"):
        tiny((tiny_dirs[0], tmp_path / "nobase")).load()
    with pytest.raises(ModelLoadError, match="local Hugging Face cache"):
        Arc2FaceLiveGenerator(model_id="synid-test/no-such-arc2face", local_files_only=True, device="cpu",
                              cache_dir=str(tmp_path / "hf")).load()  # fmt: skip


def test_lcm_lora_switches_scheduler_steps_and_guidance(tmp_path: Path, tiny_dirs: tuple[Path, Path]):
    lora = build_tiny_lcm_lora(tiny_dirs[0], tmp_path / "lcm-lora")
    gen = tiny(tiny_dirs, lcm_lora=str(lora), lcm_steps=2, batch_size=1)
    first = gen.generate([make_request(0)])[0]
    assert type(gen._pipe.scheduler).__name__ == "LCMScheduler"
    assert (first.params["scheduler"], first.params["steps"], first.params["guidance"]) == ("LCMScheduler", 2, 1.0)
    assert first.params["lcm_lora"] == str(lora) and first.image.size == (32, 32)
    # The LoRA is merged into the UNet: its weights differ from the plain Arc2Face UNet's.
    from diffusers import UNet2DConditionModel

    plain = UNet2DConditionModel.from_pretrained(tiny_dirs[0], subfolder="arc2face").state_dict()
    fused = {k.replace(".base_layer", ""): v for k, v in gen._pipe.unet.state_dict().items() if "lora_" not in k}
    changed = [k for k in plain if "to_q.weight" in k and not torch.equal(plain[k], fused[k])]
    assert changed
    # Deterministic (LCM injects noise between steps from the same per-image generator) and regenerable.
    assert png_bytes(gen.generate([make_request(0)])[0].image) == png_bytes(first.image)
    assert png_bytes(gen.regenerate(json.loads(json.dumps(first.params)))) == png_bytes(first.image)


@pytest.mark.gpu
def test_cuda_float16_generation(tiny_dirs: tuple[Path, Path]):
    gen = tiny(tiny_dirs, dtype="float16", device="cuda")
    out = gen.generate([make_request(0), make_request(1)])
    assert [item.image.size for item in out] == [(32, 32)] * 2
    assert png_bytes(gen.regenerate(out[1].params)) == png_bytes(out[1].image)
