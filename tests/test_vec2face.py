"""Vec2Face: released checkpoint layout, the published sampling rules, seeds, and generation on a tiny model."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from synid_assets.core.config.registry import backend_class
from synid_assets.core.errors import ModelLoadError
from synid_assets.core.generation.types import DocumentRequest, LiveRequest
from synid_assets.core.generation.vec2face import (
    MASK_RATIO_MAX,
    MASK_RATIO_MIN,
    VECTOR_SPACE,
    Vec2FaceDocumentGenerator,
    Vec2FaceLiveGenerator,
    draw_variation,
    load_vec2face_checkpoint,
    mask_ratio,
    perturb,
    row_masks,
)
from synid_assets.core.generation.vec2face_model import Vec2FaceConfig, Vec2FaceGenerator
from synid_assets.random_models.vec2face import TINY_HEADS, build_tiny_vec2face
from tests.generator_helpers import identity, png, unit


def upstream_shapes(rep: int, e: int, depth: int, d: int, ddepth: int, patch: int, z: int, ch: int,
                    ch_mult: tuple[int, ...], res_blocks: int) -> dict[str, tuple[int, ...]]:
    """Keys and shapes of MaskedGenerativeEncoderViT.state_dict(), written out from its definitions in
    HaiyuWu/Vec2Face @ 9d9fa8c (model_vec2face.py with timm's PatchEmbed and Mlp; im_decoder.py Decoder, temb 0)."""
    s: dict[str, tuple[int, ...]] = {
        "token_emb.position_ids": (1, 50), "token_emb.position_embeddings.weight": (50, e),
        "token_emb.LayerNorm.weight": (e,), "token_emb.LayerNorm.bias": (e,),
        "latent_prior_proj_f.weight": (e, rep), "latent_prior_proj_f.bias": (e,),
        "feature_token.weight": (49, 1), "feature_token.bias": (49,),
        "center_token.weight": (49, e), "center_token.bias": (49,),
        "im_decoder_proj.weight": (z, e), "im_decoder_proj.bias": (z,),
        "patch_embed.proj.weight": (e, 3, patch, patch), "patch_embed.proj.bias": (e,),
        "norm.weight": (e,), "norm.bias": (e,), "decoder_embed.weight": (d, e), "decoder_embed.bias": (d,),
        "decoder_pos_embed_learned": (1, 50, d), "decoder_norm.weight": (d,), "decoder_norm.bias": (d,),
    }
    for prefix, width, count in (("blocks", e, depth), ("decoder_blocks", d, ddepth)):
        for k in range(count):
            p = f"{prefix}.{k}."
            s.update({p + "norm1.weight": (width,), p + "norm1.bias": (width,), p + "norm2.weight": (width,),
                      p + "norm2.bias": (width,), p + "attn.qkv.weight": (3 * width, width),
                      p + "attn.qkv.bias": (3 * width,), p + "attn.proj.weight": (width, width),
                      p + "attn.proj.bias": (width,), p + "mlp.fc1.weight": (4 * width, width),
                      p + "mlp.fc1.bias": (4 * width,), p + "mlp.fc2.weight": (width, 4 * width),
                      p + "mlp.fc2.bias": (width,)})

    def resnet(p: str, cin: int, cout: int) -> None:
        s.update({p + "norm1.weight": (cin,), p + "norm1.bias": (cin,), p + "conv1.weight": (cout, cin, 3, 3),
                  p + "norm2.weight": (cout,), p + "norm2.bias": (cout,), p + "conv2.weight": (cout, cout, 3, 3)})
        if cin != cout:
            s[p + "nin_shortcut.weight"] = (cout, cout, 1, 1)

    block_in = ch * ch_mult[-1]
    s.update({"im_decoder.conv_in.weight": (block_in, z, 3, 3), "im_decoder.conv_in.bias": (block_in,)})
    resnet("im_decoder.mid.block_1.", block_in, block_in)
    resnet("im_decoder.mid.block_2.", block_in, block_in)
    for level in reversed(range(len(ch_mult))):
        for j in range(res_blocks):
            resnet(f"im_decoder.up.{level}.block.{j}.", block_in, ch * ch_mult[level])
            block_in = ch * ch_mult[level]
        if level:
            s.update({f"im_decoder.up.{level}.upsample.conv.weight": (block_in, block_in, 3, 3),
                      f"im_decoder.up.{level}.upsample.conv.bias": (block_in,)})
    s.update({"im_decoder.norm_out.weight": (block_in,), "im_decoder.norm_out.bias": (block_in,),
              "im_decoder.conv_out.weight": (3, block_in, 3, 3), "im_decoder.conv_out.bias": (3,)})
    return s


def shapes_of(state: dict) -> dict[str, tuple[int, ...]]:
    return {key: tuple(value.shape) for key, value in state.items()}


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory) -> Path:
    return build_tiny_vec2face(tmp_path_factory.mktemp("vec2face") / "weights" / "vec2face_generator.pth")


def test_tiny_checkpoint_has_the_upstream_keys_and_shapes(tiny_checkpoint: Path) -> None:
    raw = torch.load(tiny_checkpoint, map_location="cpu", weights_only=True)
    # vqgan.yaml's decoder with ch 32 and ch_mult [1, 1, 2, 2, 2]; ViT width 32, one block each, z 8
    assert shapes_of(raw["model_vec2face"]) == upstream_shapes(512, 32, 1, 32, 1, 16, 8, 32, (1, 1, 2, 2, 2), 1)
    model = load_vec2face_checkpoint(tiny_checkpoint, TINY_HEADS, TINY_HEADS)
    assert shapes_of(model.state_dict()) == shapes_of(raw["model_vec2face"])
    for key, value in raw["model_vec2face"].items():
        assert torch.equal(model.state_dict()[key], value), key


def test_released_size_matches_vec2face_vit_base_patch16() -> None:
    with torch.device("meta"):
        model = Vec2FaceGenerator(Vec2FaceConfig())
    # ch 128, ch_mult [1, 1, 2, 2, 4], num_res_blocks 2, z_channels 256 (configs/vec2face/vqgan.yaml)
    assert shapes_of(model.state_dict()) == upstream_shapes(512, 768, 12, 768, 8, 16, 256, 128, (1, 1, 2, 2, 4), 2)


def test_bad_checkpoints_are_named(tmp_path: Path) -> None:
    with pytest.raises(ModelLoadError, match="does not exist"):
        load_vec2face_checkpoint(tmp_path / "missing.pth")
    torch.save({"model": {}}, tmp_path / "other.pth")
    with pytest.raises(ModelLoadError, match="other.pth.*no Vec2Face generator"):
        load_vec2face_checkpoint(tmp_path / "other.pth")
    state = Vec2FaceGenerator(Vec2FaceConfig(embed_dim=32, depth=1, num_heads=2, decoder_embed_dim=32, decoder_depth=1,
                                             decoder_num_heads=2, z_channels=8, level_channels=(32,) * 5,
                                             num_res_blocks=1)).state_dict()
    del state["center_token.bias"]
    torch.save({"model_vec2face": state}, tmp_path / "cut.pth")
    with pytest.raises(ModelLoadError, match="cut.pth.*layout"):
        load_vec2face_checkpoint(tmp_path / "cut.pth", 2, 2)


def test_sigma_mix_and_renormalisation() -> None:
    vector = np.random.default_rng(1).normal(size=512)
    sigmas = [draw_variation(vector, seed, vary=True)["sigma"] for seed in range(4000)]
    shares = {s: sigmas.count(s) / len(sigmas) for s in (0.3, 0.5, 0.7)}
    assert set(sigmas) == {0.3, 0.5, 0.7}
    assert shares[0.3] == pytest.approx(0.4, abs=0.03) and shares[0.5] == pytest.approx(0.4, abs=0.03)
    assert shares[0.7] == pytest.approx(0.2, abs=0.03)
    for sigma in (0.3, 0.5, 0.7):
        moved = perturb(vector, sigma, np.random.default_rng(2))
        assert np.linalg.norm(moved) == pytest.approx(np.linalg.norm(vector), rel=1e-12)
        assert not np.allclose(moved, vector)
    # a larger sigma moves the direction further
    cos = [float(perturb(vector, s, np.random.default_rng(3)) @ vector) / float(vector @ vector) for s in (0.3, 0.7)]
    assert cos[0] > cos[1]
    document = draw_variation(vector, 5, vary=False)
    assert document["sigma"] is None and np.array_equal(document["vector"], vector)


def test_mask_ratio_distribution_and_rows() -> None:
    from scipy.stats import truncnorm

    rng = np.random.default_rng(0)
    ratios = np.array([mask_ratio(rng) for _ in range(20000)])
    assert ratios.min() >= MASK_RATIO_MIN and ratios.max() <= MASK_RATIO_MAX
    published = truncnorm((0.1 - 0.15) / 0.25, (1.0 - 0.15) / 0.25, loc=0.15, scale=0.25)
    assert ratios.mean() == pytest.approx(published.mean(), abs=0.005)
    assert ratios.std() == pytest.approx(published.std(), abs=0.005)
    for ratio in (0.1, 0.37, 1.0):
        dropped, masked = row_masks(ratio, rng)
        assert dropped.sum() == 5 and masked.sum() == math.ceil(49 * ratio)
        assert not (dropped & ~masked).any()


def test_draws_are_deterministic_from_the_seed() -> None:
    vector = np.random.default_rng(4).normal(size=512)
    a, b, c = (draw_variation(vector, seed, vary=True) for seed in (7, 7, 8))
    assert all(np.array_equal(a[k], b[k]) for k in ("vector", "dropped", "masked"))
    assert a["mask_ratio"] == b["mask_ratio"] and a["sigma"] == b["sigma"]
    assert not np.array_equal(a["vector"], c["vector"])




def test_generate_and_regenerate(tiny_checkpoint: Path) -> None:
    options = {"model_id": str(tiny_checkpoint), "num_heads": TINY_HEADS, "decoder_num_heads": TINY_HEADS,
               "device": "cpu", "batch_size": 1}
    assert backend_class("document_generator", "vec2face") is Vec2FaceDocumentGenerator
    assert backend_class("live_generator", "vec2face") is Vec2FaceLiveGenerator
    assert Vec2FaceDocumentGenerator.vector_space == VECTOR_SPACE and Vec2FaceDocumentGenerator.vector_dim == 512
    documents = Vec2FaceDocumentGenerator(**options).generate(
        [DocumentRequest(identity(i), "", 10 + i, identity_vector=unit(i)) for i in range(2)])
    live_gen = Vec2FaceLiveGenerator(**options)
    live = live_gen.generate([LiveRequest(identity(0), "", k, 20 + k, "doc.png", document_embedding=unit(0))
                              for k in range(3)])
    for result in documents + live:
        assert result.image.size == (112, 112) and result.image.mode == "RGB"
        assert result.params["width"] == 112 and result.params["aligned"] is True
        assert MASK_RATIO_MIN <= result.params["mask_ratio"] <= MASK_RATIO_MAX
    assert documents[0].params["sigma"] is None and documents[0].params["vector_source"]["source"] == "identity_vectors"
    assert {r.params["sigma"] for r in live} <= {0.3, 0.5, 0.7}
    assert live[0].params["vector_source"]["source"] == "document_embedding"
    assert len({png(r.image) for r in live}) == 3  # variations differ
    # regenerate from the recorded params (JSON round trip), by the same and by a fresh generator
    import json

    for result, cls in ((documents[1], Vec2FaceDocumentGenerator), (live[2], Vec2FaceLiveGenerator)):
        params = json.loads(json.dumps(result.params))
        assert png(cls(**options).regenerate(params)) == png(result.image)
        fresh = cls.from_params(params, num_heads=TINY_HEADS, decoder_num_heads=TINY_HEADS, device="cpu")
        assert png(fresh.regenerate(params)) == png(result.image)
    with pytest.raises(ValueError, match="varies"):
        live_gen.regenerate(documents[0].params)
    # batched generation gives the same images up to float rounding
    batched = Vec2FaceLiveGenerator(**{**options, "batch_size": 8}).generate(
        [LiveRequest(identity(0), "", k, 20 + k, "doc.png", document_embedding=unit(0)) for k in range(3)])
    for a, b in zip(live, batched, strict=True):
        assert np.abs(np.asarray(a.image, int) - np.asarray(b.image, int)).max() <= 1


def test_bad_vectors_fail_before_loading() -> None:
    generator = Vec2FaceLiveGenerator(model_id="/nonexistent/vec2face.pth")
    with pytest.raises(ValueError, match="b0-000.*512-d"):
        generator.generate([LiveRequest(identity(0), "", 0, 1, "doc.png", document_embedding=[1.0] * 128)])
    with pytest.raises(ValueError, match="norm 0"):
        generator.generate([LiveRequest(identity(0), "", 0, 1, "doc.png", document_embedding=[0.0] * 512)])
    assert not generator.loaded
    with pytest.raises(ModelLoadError, match="does not exist"):
        generator.load()
