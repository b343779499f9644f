"""Checks before re-making an image from its recorded params: the same generator, with the same model settings."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any


def check_generator(generator: Any, params: Mapping[str, Any]) -> None:
    """Refuse params that another generator recorded."""
    if params.get("generator", generator.name) != generator.name:
        raise ValueError(f"params were made by generator {params.get('generator')!r}, not {generator.name!r}")


def check_params_match(
    generator: Any, params: Mapping[str, Any], fields: Iterable[str], also_mismatched: Iterable[str] = ()
) -> None:
    """Refuse params whose recorded settings differ from this generator's: the image would not be the same.

    `fields` are compared with the generator's attributes of the same name where the params record them;
    `also_mismatched` names fields the caller found different by its own rule (e.g. a resolved revision).
    """
    check_generator(generator, params)
    mismatched = [f for f in fields if f in params and params[f] != getattr(generator, f)]
    mismatched += [f for f in also_mismatched if f not in mismatched]
    if mismatched:
        detail = ", ".join(f"{f}: recorded {params.get(f)!r}" for f in mismatched)
        raise ValueError(f"params do not match this generator ({detail}); use from_params(params)")
