"""IDiff-Face: released checkpoint layout, the published schedule, seeds, and generation on a tiny model."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from synid_assets.core.config.registry import backend_class
from synid_assets.core.errors import ModelLoadError
from synid_assets.core.generation.idiff_face import (
    CHECKPOINT_FILE,
    DECODER_FILE,
    LICENSE,
    VECTOR_SPACE,
    IDiffFaceDocumentGenerator,
    IDiffFaceLiveGenerator,
    load_idiff_face_decoder,
    load_idiff_face_unet,
    make_scheduler,
)
from synid_assets.core.generation.idiff_face_model import (
    ConditionalUNet,
    DecoderConfig,
    UNetConfig,
    VQDecoderInterface,
    decoder_config_from_state_dict,
    unet_config_from_state_dict,
)
from synid_assets.core.generation.types import DocumentRequest, LiveRequest
from synid_assets.random_models.idiff_face import build_tiny_idiff_face, tiny_configs
from tests.generator_helpers import identity, png, unit

# Fingerprints (key count, sha256 of the sorted "key:shape" lines) of the state dicts of upstream's modules at
# fdbtrs/IDiff-Face @ 8b3936935710dc78519933f905b14bd60ff9cb26, built with `configs/model/unet_cond_ca_cpd25.yaml`
# (models.diffusion.unet.ConditionalUNet, 216,341,187 parameters as the config's header says) and with
# `models/autoencoder/first_stage_config.yaml` (VQDecoderInterface: Decoder, VectorQuantizer2(8192, 3),
# post_quant_conv). Our modules loaded upstream's random weights strictly and gave the same outputs (max abs
# difference 3e-8 for the UNet, 2e-6 for the decoder) when this was written.
UPSTREAM_UNET = (842, "7edb8c0b1447454ac69ef500a06058d91b369eba355a85bc15f3a7b54765782a")
UPSTREAM_DECODER = (115, "589a2c26705840cd7e9d88ea463408d211f516f75fa2cd5bb476c4dfdda6d391")


def fingerprint(state: dict) -> tuple[int, str]:
    lines = sorted(f"{k}:{tuple(v.shape)}" for k, v in state.items())
    return len(lines), hashlib.sha256("\n".join(lines).encode()).hexdigest()


def test_released_sizes_have_upstreams_keys_and_shapes() -> None:
    with torch.device("meta"):
        unet, decoder = ConditionalUNet(UNetConfig()), VQDecoderInterface(DecoderConfig())
    assert fingerprint(unet.state_dict()) == UPSTREAM_UNET
    assert sum(p.numel() for p in unet.parameters()) == 216_341_187
    assert fingerprint(decoder.state_dict()) == UPSTREAM_DECODER
    assert unet_config_from_state_dict(unet.state_dict()) == UNetConfig()
    assert decoder_config_from_state_dict(decoder.state_dict()) == DecoderConfig()


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory) -> Path:
    return build_tiny_idiff_face(tmp_path_factory.mktemp("idiff") / "idiff-face")


def test_tiny_model_loads_through_the_released_layout(tiny_model: Path) -> None:
    raw = torch.load(tiny_model / CHECKPOINT_FILE, weights_only=True)
    assert "betas" in raw and all(k.startswith("eps_model.") for k in raw if k not in {
        "betas", "alphas", "sigmas", "sqrt_alphas_inv", "alpha_bars", "sqrt_alpha_bars", "sqrt_one_minus_alpha_bars",
        "one_minus_alphas_over_sqrt_one_minus_alpha_bars"})
    unet_config, decoder_config = tiny_configs()
    assert unet_config_from_state_dict(load_idiff_face_unet(tiny_model / CHECKPOINT_FILE).state_dict()) == unet_config
    decoder = load_idiff_face_decoder(tiny_model / DECODER_FILE)
    assert decoder_config_from_state_dict(decoder.state_dict()) == decoder_config
    with torch.no_grad():
        assert decoder(torch.randn(1, 3, 32, 32)).shape == (1, 3, 128, 128)


def test_published_schedule() -> None:
    for name, steps in (("ddpm", 1000), ("ddim", 50)):
        scheduler = make_scheduler(name, steps)
        betas = scheduler.betas.numpy()
        assert len(betas) == 1000 and betas[0] == pytest.approx(1e-4) and betas[-1] == pytest.approx(0.02)
        assert np.allclose(np.diff(betas), np.diff(betas)[0], atol=1e-9)  # linear
        assert scheduler.config.prediction_type == "epsilon" and len(scheduler.timesteps) == steps
    ddpm = make_scheduler("ddpm", 1000)
    assert ddpm.config.variance_type == "fixed_large"  # upstream's sigma_t = sqrt(beta_t)
    assert list(ddpm.timesteps[:2]) == [999, 998] and int(ddpm.timesteps[-1]) == 0




@pytest.mark.parametrize("scheduler,steps", [("ddim", 4), ("ddpm", 3)])
def test_generate_and_regenerate(tiny_model: Path, scheduler: str, steps: int) -> None:
    options = {"model_id": str(tiny_model), "scheduler": scheduler, "steps": steps, "device": "cpu", "batch_size": 1}
    assert backend_class("document_generator", "idiff_face") is IDiffFaceDocumentGenerator
    assert backend_class("live_generator", "idiff_face") is IDiffFaceLiveGenerator
    assert IDiffFaceDocumentGenerator.vector_space == VECTOR_SPACE and IDiffFaceDocumentGenerator.vector_dim == 512
    assert "CC BY-NC-SA 4.0" in LICENSE
    documents = IDiffFaceDocumentGenerator(**options).generate(
        [DocumentRequest(identity(i), "", 10 + i, identity_vector=unit(i)) for i in range(2)])
    live = IDiffFaceLiveGenerator(**options).generate(
        [LiveRequest(identity(0), "", k, 20 + k, "doc.png", document_embedding=unit(0)) for k in range(3)])
    for result in documents + live:
        assert result.image.size == (128, 128) and result.image.mode == "RGB"
        p = result.params
        assert p["aligned"] is False and p["scheduler"] == scheduler and p["steps"] == steps
        assert p["license"] == LICENSE and p["schedule"]["T"] == 1000 and p["vector_space"] == VECTOR_SPACE
    assert documents[0].params["vector_source"]["source"] == "identity_vectors"
    assert live[0].params["vector_source"]["source"] == "document_embedding"
    assert len({png(r.image) for r in live}) == 3  # the seeds' noise varies the images
    for result, cls in ((documents[1], IDiffFaceDocumentGenerator), (live[2], IDiffFaceLiveGenerator)):
        params = json.loads(json.dumps(result.params))
        assert png(cls(**options).regenerate(params)) == png(result.image)
        assert png(cls.from_params(params, device="cpu").regenerate(params)) == png(result.image)
    with pytest.raises(ValueError, match="steps"):
        IDiffFaceLiveGenerator(**{**options, "steps": steps + 1}).regenerate(live[0].params)
    # each image's noise comes from its own seed: batching does not change it (up to float rounding)
    batched = IDiffFaceLiveGenerator(**{**options, "batch_size": 8}).generate(
        [LiveRequest(identity(0), "", k, 20 + k, "doc.png", document_embedding=unit(0)) for k in range(3)])
    for a, b in zip(live, batched, strict=True):
        assert np.abs(np.asarray(a.image, int) - np.asarray(b.image, int)).max() <= 1


def test_defaults() -> None:
    assert IDiffFaceLiveGenerator().steps == 50
    assert IDiffFaceLiveGenerator(scheduler="ddpm").steps == 1000  # as published
    with pytest.raises(ValueError, match="scheduler"):
        IDiffFaceLiveGenerator(scheduler="euler")
    assert IDiffFaceLiveGenerator.required_models({"model_id": "~/m"})[0].license == LICENSE


def test_bad_checkpoints_are_named(tmp_path: Path, tiny_model: Path) -> None:
    garbage = tmp_path / "ema_averaged_model.ckpt"
    garbage.write_bytes(b"not a checkpoint")
    with pytest.raises(ModelLoadError, match=r"ema_averaged_model\.ckpt.*could not be read") as error:
        load_idiff_face_unet(garbage)
    assert "\n" not in str(error.value)
    torch.save({"something": torch.zeros(1)}, garbage)
    with pytest.raises(ModelLoadError, match="holds no conditional UNet"):
        load_idiff_face_unet(garbage)
    state = torch.load(tiny_model / CHECKPOINT_FILE, weights_only=True)
    del state["eps_model.final.bias"]
    torch.save(state, garbage)
    with pytest.raises(ModelLoadError, match=r"ema_averaged_model\.ckpt.*does not match") as error:
        load_idiff_face_unet(garbage)
    assert "\n" not in str(error.value)
    with pytest.raises(ModelLoadError, match=r"decoder .*does not exist"):
        load_idiff_face_decoder(tmp_path / "missing.pt")
    with pytest.raises(ModelLoadError, match="model directory"):
        IDiffFaceLiveGenerator(model_id=str(tmp_path / "nope")).load()


def test_bad_vectors_fail_before_loading() -> None:
    generator = IDiffFaceLiveGenerator(model_id="/nonexistent/idiff-face")
    with pytest.raises(ValueError, match="b0-000.*512-d"):
        generator.generate([LiveRequest(identity(0), "", 0, 1, "doc.png", document_embedding=[1.0] * 128)])
    assert not generator.loaded
