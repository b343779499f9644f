"""The template prompt writer names every sampled attribute, with FLUXSynID's opening and closing."""

from __future__ import annotations

from synid_assets.core.dataset.seeds import rng_for
from synid_assets.core.generation.template_prompts import CLOSING, TemplatePromptWriter
from synid_assets.core.generation.types import IdentityRecord
from synid_assets.core.spec.loading import load_attribute_spec
from synid_assets.core.spec.sampling import sample_identity_attributes, subject_word


def test_every_attribute_value_is_in_the_prompt() -> None:
    spec = load_attribute_spec("attributes")
    writer = TemplatePromptWriter()
    identities = []
    for i in range(200):
        attributes = sample_identity_attributes(spec, rng_for(i, "attributes"))
        identities.append(IdentityRecord(f"b-{i}", "b", i, i, attributes, subject_word(spec, attributes)))
    for identity, result in zip(identities, writer.write(identities), strict=True):
        text = result.prompt.lower()
        assert result.prompt.startswith(f"Photograph of a {identity.subject}. The subject has a neutral")
        assert result.prompt.endswith(CLOSING)
        assert result.prompt.isascii()
        for attribute, value in identity.attributes.items():
            if attribute != "genders":
                assert value.lower() in text, (attribute, value)
        assert (result.writer, result.writer_version, result.fallback) == ("template", "1", False)


def test_trigger_token_goes_first() -> None:
    identity = IdentityRecord("b-0", "b", 0, 0, {"ages": "30-39"}, "woman")
    (result,) = TemplatePromptWriter(trigger="s7ll2f4h").write([identity])
    assert result.prompt.startswith("s7ll2f4h, Photograph of a woman.")
    assert "30-39" in result.prompt
