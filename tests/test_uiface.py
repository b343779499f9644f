"""UIFace: released key layout, the two-stage rules (switch, guidance, attention injection) and generation, on tiny
random-weight models through the real loading path."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from synid_assets.core.config.registry import backend_class
from synid_assets.core.errors import ModelLoadError
from synid_assets.core.generation.idiff_face import make_scheduler
from synid_assets.core.generation.idiff_face_model import UNetConfig, unet_config_from_state_dict
from synid_assets.core.generation.types import DocumentRequest, LiveRequest
from synid_assets.core.generation.uiface import (
    CHECKPOINT_FILE,
    LICENSE,
    VECTOR_SPACE,
    UIFaceDocumentGenerator,
    UIFaceLiveGenerator,
    load_uiface_unet,
)
from synid_assets.core.generation.uiface_model import (
    UIFaceUNet,
    install_processors,
    remove_processors,
    renormalized_cross_logits,
)
from synid_assets.core.generation.uiface_sampling import (
    SamplingTrace,
    attention_map,
    classifier_free_guidance,
    identity_start_steps,
    map_change,
    sample_two_stage,
    update_switch,
)
from synid_assets.random_models.idiff_face import build_tiny_idiff_face
from synid_assets.random_models.uiface import build_tiny_uiface
from tests.generator_helpers import identity, png, unit
from tests.test_idiff_face import fingerprint

# The state dict of upstream's ConditionalUNet at Tencent/TFace @ 171ec1434aca0972e111663ac646c9c1e3e44b5b
# (generation/uiface/models/diffusion/unet.py) built with configs/model/unet_cond_ca_cpd25_uncond20.yaml
# (learn_empty_context: True): IDiff-Face's 842 keys plus `empty_context_embedding` [256], 216,341,443 parameters.
# When this was written, upstream's module loaded our tiny random weights strictly and, against upstream's
# `sample_ddim_2stage` (with its own DDIM arithmetic swapped into ours), gave the same noise predictions for the
# empty, stage-1 (condition_flag, self-attention injected) and stage-2 (self and cross injected) passes (max abs
# difference 3e-6 of outputs of about 0.4), the same attention maps (9e-7) and change measure, and the same final
# latents after the whole 50-step two-stage sampling (5e-4 of values up to 750, so the same per-sample switches).
UPSTREAM_UNET = (843, "8bc2e64c735523793c81feda4f98a2dcc6f57810a094781b609121be75ef009a")


def test_released_sizes_have_upstreams_keys_and_shapes() -> None:
    with torch.device("meta"):
        unet = UIFaceUNet(UNetConfig())
    assert fingerprint(unet.state_dict()) == UPSTREAM_UNET
    assert sum(p.numel() for p in unet.parameters()) == 216_341_443
    assert unet_config_from_state_dict(unet.state_dict()) == UNetConfig()


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory) -> Path:
    return build_tiny_uiface(tmp_path_factory.mktemp("uiface") / "uiface")


@pytest.fixture(scope="module")
def tiny_unet(tiny_model: Path) -> UIFaceUNet:
    return load_uiface_unet(tiny_model / CHECKPOINT_FILE)


def test_both_upstream_checkpoint_layouts_load(tmp_path: Path, tiny_model: Path, tiny_unet: UIFaceUNet) -> None:
    raw = torch.load(tiny_model / CHECKPOINT_FILE, weights_only=True)
    assert "eps_model.empty_context_embedding" in raw and "betas" in raw
    ddp = load_uiface_unet(build_tiny_uiface(tmp_path / "ddp", ddp=True) / CHECKPOINT_FILE)  # module.eps_model.*
    for a, b in zip(ddp.state_dict().values(), tiny_unet.state_dict().values(), strict=True):
        assert torch.equal(a, b)  # same seed, same weights, whichever layout
    assert torch.equal(tiny_unet.empty_context_embedding, raw["eps_model.empty_context_embedding"])


def test_bad_checkpoints_are_named(tmp_path: Path, tiny_model: Path) -> None:
    idiff = build_tiny_idiff_face(tmp_path / "idiff") / "checkpoints" / "ema_averaged_model.ckpt"
    with pytest.raises(ModelLoadError, match="no learned empty context.*idiff_face backend"):
        load_uiface_unet(idiff)
    state = torch.load(tiny_model / CHECKPOINT_FILE, weights_only=True)
    state["betas"] = torch.linspace(1e-4, 0.03, 1000)
    torch.save(state, tmp_path / "other.ckpt")
    with pytest.raises(ModelLoadError, match=r"other\.ckpt.*another schedule"):
        load_uiface_unet(tmp_path / "other.ckpt")
    with pytest.raises(ModelLoadError, match="UIFace model directory"):
        UIFaceLiveGenerator(model_id=str(tmp_path / "nope")).load()


def constant_maps(levels: list[list[float]]) -> torch.Tensor:
    """A recorded trace [steps, batch, 32, 32]: sample b's map at step i is the constant levels[i][b]."""
    return torch.tensor(levels, dtype=torch.float32)[:, :, None, None].expand(-1, -1, 32, 32).clone()


def test_switch_rule_on_a_recorded_trace() -> None:
    # Stage-1 timesteps 980..500, then stage 2. Per step the change of sample 0 is 0.02, 0.01, 0.004 (below 0.006:
    # on its identity from the next step), sample 1's changes stay at 0.0061 (never below: stage 2 at t = 480),
    # sample 2's drop to 0.0059 once (switches), sample 3 is flat from the start (switches after the second step).
    timesteps = list(range(980, -1, -20))
    levels = [[0.0, 0.0, 0.0, 0.5]]
    for step in range(1, 25):
        change0 = {1: 0.02, 2: 0.01}.get(step, 0.004)
        change2 = 0.0059 if step == 5 else 0.05
        levels.append([levels[-1][0] + change0, levels[-1][1] + 0.0061, levels[-1][2] + change2, 0.5])
    maps = constant_maps(levels)
    assert torch.allclose(map_change(maps[1], maps[2]), torch.tensor([0.01, 0.0061, 0.05, 0.0]), atol=1e-6)
    assert identity_start_steps(timesteps, maps) == [900, 480, 860, 940]
    # per sample: the same sample in another batch switches at the same step
    assert identity_start_steps(timesteps, maps[:, 2:3]) == [860]
    # the fallback: a threshold nothing meets puts every sample on its identity at the first t < 500
    assert identity_start_steps(timesteps, maps, threshold=0.0) == [480] * 4
    switched = update_switch(torch.tensor([True, False]), maps[0, :2], maps[1, :2])
    assert switched.tolist() == [True, False]  # a switch is for good


def test_classifier_free_guidance_formula() -> None:
    cond, uncond = torch.tensor([1.0, -2.0]), torch.tensor([0.5, 3.0])
    assert classifier_free_guidance(cond, uncond, 1.0).tolist() == [1.5, -7.0]  # 2 cond - uncond
    assert classifier_free_guidance(cond, uncond, 0.0).tolist() == cond.tolist()


def inputs(batch: int = 3, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, 3, 32, 32, generator=g)
    context = torch.nn.functional.normalize(torch.randn(batch, 512, generator=g), dim=1)
    return x, torch.full((batch,), 300), context


def test_injection_changes_the_conditioned_pass(tiny_unet: UIFaceUNet) -> None:
    x, t, context = inputs()
    state = install_processors(tiny_unet)
    used: dict[str, torch.Tensor] = {}
    for block in (m for m in tiny_unet.modules() if getattr(m, "processor", None) is not None):
        block.processor = (lambda p: lambda attn, logits: used.setdefault(p.name, p(attn, logits)))(block.processor)
    try:
        with torch.no_grad():
            state.start_pass()
            tiny_unet(x, t, None)
            empty = dict(state.recorded)
            used.clear()
            state.start_pass()
            plain = tiny_unet(x, t, context)
            plain_cross = attention_map(list(state.maps("cross").values()), 3)
            assert all(torch.equal(used[k], v) for k, v in state.recorded.items())  # nothing injected
            used.clear()
            state.start_pass(source=empty, inject_cross=True)
            injected = tiny_unet(x, t, context)
            injected_cross = attention_map(list(state.maps("cross").values()), 3)
    finally:
        remove_processors(tiny_unet)
    for name, logits in used.items():
        if name.endswith("self_attention"):
            assert torch.equal(logits, empty[name])  # the empty pass's self-attention replaces the block's
        else:  # cross-attention: own pattern, statistics halfway to the empty pass's
            own = state.recorded[name]
            assert torch.allclose(logits, renormalized_cross_logits(own, empty[name]))
            target = 0.5 * empty[name].mean(dim=2) + 0.5 * own.mean(dim=2)
            assert torch.allclose(logits.mean(dim=2), target, atol=1e-5)
    assert (injected - plain).abs().max() > 1e-3
    assert (injected_cross - plain_cross).abs().max() > 1e-3  # its own cross-attention maps move too
    assert all(m.processor is None for m in tiny_unet.modules() if hasattr(m, "processor"))


class RecordingScheduler:
    """diffusers' DDIM, keeping the noise prediction each step was given."""

    def __init__(self, steps: int) -> None:
        self.inner = make_scheduler("ddim", steps)
        self.timesteps = self.inner.timesteps
        self.eps: dict[int, torch.Tensor] = {}
        self.x: dict[int, torch.Tensor] = {}

    def step(self, eps, t, x, eta=0.0):
        self.eps[int(t)], self.x[int(t)] = eps.clone(), x.clone()
        return self.inner.step(eps, t, x, eta=eta)


def test_sampler_switches_per_sample_and_guides_in_stage_two(tiny_unet: UIFaceUNet) -> None:
    # 10 DDIM steps (900, 800, ..., 0; stage 1 down to 500) with a threshold the tiny model's maps cross at
    # different steps (their changes are 0.05-0.09 per step): the published 0.006 needs 50 steps of a trained model.
    x, _, context = inputs(4, seed=1)
    scheduler, trace = RecordingScheduler(10), SamplingTrace()
    sample_two_stage(tiny_unet, scheduler, x, context, switch_threshold=0.055, trace=trace)
    assert trace.timesteps[:5] == [900, 800, 700, 600, 500] and len(trace.stage_one_maps) == 5
    # the sampler's switches are the rule's on the trace it recorded, and they differ between samples
    maps = torch.stack(trace.stage_one_maps)
    assert trace.identity_from == identity_start_steps(trace.timesteps, maps, threshold=0.055)
    assert len(set(trace.identity_from)) > 1 and all(400 <= s <= 800 for s in trace.identity_from)
    # batch independence: a sample alone switches at the same step
    alone = SamplingTrace()
    sample_two_stage(tiny_unet, make_scheduler("ddim", 10), x[1:2], context[1:2], switch_threshold=0.055, trace=alone)
    assert alone.identity_from == [trace.identity_from[1]]
    # stage 2 steps are guided: (1 + s) cond - s uncond, cond with the empty pass's attention injected
    t = 400
    steps = torch.full((4,), t)
    state = install_processors(tiny_unet)
    try:
        with torch.no_grad():
            state.start_pass()
            uncond = tiny_unet(scheduler.x[t], steps, None)
            state.start_pass(source=dict(state.recorded), inject_cross=True)
            cond = tiny_unet(scheduler.x[t], steps, context)
    finally:
        remove_processors(tiny_unet)
    assert torch.allclose(scheduler.eps[t], 2 * cond - uncond, atol=1e-5)
    # stage 1 before any switch: the prediction is the empty context's
    with torch.no_grad():
        first = tiny_unet(scheduler.x[900], torch.full((4,), 900), None)
    assert torch.allclose(scheduler.eps[900], first, atol=1e-6)




def test_generate_and_regenerate(tiny_model: Path) -> None:
    options = {"model_id": str(tiny_model), "steps": 6, "device": "cpu", "batch_size": 1}
    assert backend_class("document_generator", "uiface") is UIFaceDocumentGenerator
    assert backend_class("live_generator", "uiface") is UIFaceLiveGenerator
    assert UIFaceDocumentGenerator.vector_space == VECTOR_SPACE and UIFaceDocumentGenerator.vector_dim == 512
    assert "Apache-2.0" in LICENSE
    documents = UIFaceDocumentGenerator(**{**options, "batch_size": 2}).generate(
        [DocumentRequest(identity(i), "", 10 + i, identity_vector=unit(i)) for i in range(2)])
    live = UIFaceLiveGenerator(**options).generate(
        [LiveRequest(identity(0), "", k, 20 + k, "doc.png", document_embedding=unit(0)) for k in range(2)])
    for result in documents + live:
        assert result.image.size == (112, 112) and result.image.mode == "RGB"
        p = result.params
        assert p["generator"] == "uiface" and p["aligned"] is True and p["steps"] == 6 and "scheduler" not in p
        assert (p["guidance_scale"], p["switch_threshold"], p["stage_two_below"]) == (1.0, 0.006, 500)
        assert p["license"] == LICENSE and p["upstream_commit"].startswith("171ec14")
        assert p["identity_from_step"] in (664, 498)  # 6 DDIM steps: 830, 664 (stage 1), 498, ... (stage 2)
    assert documents[0].params["vector_source"]["source"] == "identity_vectors"
    assert live[0].params["vector_source"]["source"] == "document_embedding"
    assert png(live[0].image) != png(live[1].image)  # each seed's initial noise
    params = json.loads(json.dumps(live[1].params))
    assert png(UIFaceLiveGenerator(**options).regenerate(params)) == png(live[1].image)
    assert png(UIFaceLiveGenerator.from_params(params, device="cpu").regenerate(params)) == png(live[1].image)
    # made in a batch of 2, re-made alone: the same image up to float rounding
    again = UIFaceDocumentGenerator(**options).regenerate(json.loads(json.dumps(documents[1].params)))
    assert np.abs(np.asarray(again, int) - np.asarray(documents[1].image, int)).max() <= 1
    with pytest.raises(ValueError, match="switch_threshold"):
        UIFaceLiveGenerator(**{**options, "switch_threshold": 0.01}).regenerate(params)
    with pytest.raises(ValueError, match="UIFace needs"):
        UIFaceLiveGenerator(model_id="/nonexistent").generate(
            [LiveRequest(identity(0), "", 0, 1, "doc.png", document_embedding=[1.0] * 128)])


def test_declares_its_files_and_licence() -> None:
    [need] = UIFaceLiveGenerator.required_models(
        {"model_id": "~/m", "checkpoint_file": CHECKPOINT_FILE, "decoder_file": "autoencoder/d.pt"})
    assert need.files == (CHECKPOINT_FILE, "autoencoder/d.pt") and need.license == LICENSE
    assert UIFaceLiveGenerator().steps == 50 and UIFaceLiveGenerator().stage_two_below == 500
    with pytest.raises(ValueError, match="stage_two_below"):
        UIFaceLiveGenerator(stage_two_below=2000)
