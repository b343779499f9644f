"""Procedural renderer: determinism, identity-stable geometry, speed-friendly sizes."""

from __future__ import annotations

import hashlib
import io
import json

import numpy as np
import pytest

from synid_assets.core.generation import render

ATTRS = {"genders": "Female", "origins": "South Asian", "hair_colors": "Black", "hair_styles": "Wavy"}


def _sha(img) -> str:
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return hashlib.sha256(buf.getvalue()).hexdigest()


def test_document_is_deterministic_and_seed_dependent():
    a = render.render_document(ATTRS, 11)
    b = render.render_document(ATTRS, 11)
    c = render.render_document(ATTRS, 12)
    assert a.size == (256, 256) and a.mode == "RGB"
    assert _sha(a) == _sha(b)
    assert _sha(a) != _sha(c)


def test_live_is_a_pure_function_of_its_inputs():
    var = render.draw_live_variation(5)
    assert var == render.draw_live_variation(5)
    assert var != render.draw_live_variation(6)
    json.dumps(var)  # must be recordable as-is
    for key in ("yaw", "pitch", "roll", "expression", "expression_strength", "lighting", "background",
                "blur_sigma", "noise_sigma"):
        assert key in var
    a = render.render_live(ATTRS, 11, var)
    b = render.render_live(ATTRS, 11, json.loads(json.dumps(var)))
    assert _sha(a) == _sha(b)
    assert _sha(a) != _sha(render.render_live(ATTRS, 12, var))


def test_identity_geometry_ignores_the_attribute_set():
    # Geometry draws come from one fixed block, so adding an unrelated attribute changes nothing else.
    base = render.build_identity({"genders": "Male"}, 3)
    more = render.build_identity({"genders": "Male", "eyewear": "Clear non-reflective eyeglasses"}, 3)
    assert base.eye_dx == more.eye_dx and base.nose_tip == more.nose_tip and base.ry == more.ry


@pytest.mark.parametrize(
    "attrs",
    [
        {},
        {"headwear": "Hijab", "genders": "Female"},
        {"headwear": "Turban", "facial_hair": "Full beard", "genders": "Male"},
        {"hair_styles": "Bald", "ages": "80+", "skin_type": "Freckled"},
        {"hair_colors": "Multicolored", "hair_styles": "Bun", "skin_type": "Scarred"},
        {"facial_hair": "Handlebar mustache", "eyewear": "Clear non-reflective eyeglasses"},
    ],
)
def test_every_attribute_family_renders(attrs):
    img = render.render_live(attrs, 7, render.draw_live_variation(1), size=128)
    arr = np.asarray(img)
    assert arr.shape == (128, 128, 3) and arr.std() > 5


def test_live_variation_stays_in_recorded_ranges():
    # Pose and lighting ranges are what keeps live images detectable and matchable to the document.
    for seed in range(300):
        var = render.draw_live_variation(seed)
        assert abs(var["yaw"]) <= 10.0 and abs(var["pitch"]) <= 5.0 and abs(var["roll"]) <= 6.0
        assert var["expression"] in render.EXPRESSIONS
        assert 0.2 <= var["expression_strength"] <= 0.7
        light = var["lighting"]
        assert abs(light["azimuth"]) <= 30.0 and 0.7 <= light["ambient"] <= 0.9


def test_fringe_never_reaches_the_brows():
    for seed in range(200):
        ident = render.build_identity({"hair_styles": "Straight"}, seed)
        brow_top = ident.eye_y - ident.brow_gap - ident.brow_arch - ident.brow_thick
        # A fringe only lowers the hairline while it stays 0.2 head units above the brows.
        assert ident.fringe == 0.0 or ident.hairline + ident.fringe <= brow_top - 0.2 + 1e-9


def test_dark_skin_gets_more_exposure():
    light = render.build_identity({"origins": "North European"}, 4)
    dark = render.build_identity({"origins": "West African"}, 4)
    assert dark.tone > light.tone
    assert dark.exposure > light.exposure >= 1.0
