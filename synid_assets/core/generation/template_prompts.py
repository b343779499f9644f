"""Prompt writers. The embedded default is a deterministic template that names every sampled attribute."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from synid_assets.core.config.requirements import BackendRequirements, ModelNeed
from synid_assets.core.generation.types import IdentityRecord, PromptResult

GENDER_CLASSES = frozenset({"gender", "genders", "sex", "sexes"})

# FLUXSynID's fixed opening and document-framing closing (its prompt script's semantics).
OPENING = "Photograph of a {subject}. The subject has a neutral face expression."
CLOSING = (
    "Photo captures the subject from the neck up with grey clothing slightly visible around the neck. "
    "White background."
)

# A sentence per known FLUXSynID class; unknown classes fall back to "<Label>: <value>.".
_SENTENCES: Mapping[str, str] = {
    "ages": "The subject is {value} years old.",
    "origins": "The subject is of {value} origin.",
    "hair_colors": "The subject has {value_lower} hair.",
    "hair_styles": "The subject's hair style is {value_lower}.",
    "facial_hair": "Facial hair: {value_lower}.",
    "body_type": "The subject's body type is {value_lower}.",
    "face_shape": "The subject has a {value_lower} face shape.",
    "skin_type": "Skin: {value_lower}.",
    "nose_shape": "The subject's nose is {value_lower}.",
    "lip_shape": "The subject has {value_lower} lips.",
    "eye_shape": "The subject has {value_lower} eyes.",
    "headwear": "The subject wears a {value_lower}.",
    "eyewear": "The subject wears {value_lower}.",
}


def attribute_sentence(attribute: str, value: str) -> str:
    template = _SENTENCES.get(attribute)
    if template is None:
        label = attribute.replace("_", " ").strip().capitalize()
        return f"{label}: {value}."
    return template.format(value=value, value_lower=value.lower())


def template_prompt(attributes: Mapping[str, str], subject: str, trigger: str = "") -> str:
    """Opening, one sentence per non-gender attribute (in the given order), then the closing."""
    parts = [OPENING.format(subject=subject)]
    parts += [attribute_sentence(k, v) for k, v in attributes.items() if k.lower() not in GENDER_CLASSES]
    parts.append(CLOSING)
    text = " ".join(parts)
    return f"{trigger}, {text}" if trigger else text


class TemplatePromptWriter:
    """Deterministic, CPU-only prompt writer; also the fallback of model-based writers."""

    name = "template"
    version = "1"
    # What it needs (see core/config/requirements.py): the CPU, no model.
    requirements = BackendRequirements(device="cpu")

    @classmethod
    def required_models(cls, options: Mapping[str, Any]) -> list[ModelNeed]:
        return []

    def __init__(self, trigger: str = "") -> None:
        self.trigger = trigger

    def write(self, identities: Sequence[IdentityRecord]) -> list[PromptResult]:
        return [
            PromptResult(
                prompt=template_prompt(identity.attributes, identity.subject, self.trigger),
                writer=self.name,
                writer_version=self.version,
                raw_output=None,
                params={"trigger": self.trigger},
            )
            for identity in identities
        ]
