"""Scores per demographic group: does the generator or the filter treat genders, origins or ages unequally?

A group is one value of a demographic class (gender, origin, age: the spec's class of that stem). Per group:
- identities sampled, identities accepted, and the filter's decisions and acceptance rate;
- genuine pairs: the report's genuine pairs (live vs document, live vs live) of the group's identities;
- impostor pairs: document vs document pairs of two distinct identities of the same group (all pairs, or a
  seeded sample above MAX_GROUP_IMPOSTOR_PAIRS), over every embedded document (what the generator made, before
  the filter), and separately over the accepted identities' documents (what the dataset holds);
- FMR and FNMR at the global operating threshold.
Identities without a value for a class (the class not used for them) form the group `<not used>`, so the
groups of a class add up to the whole dataset. Groups with too few pairs are kept and marked in `note`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np

from synid_assets.core.quality.scores import fmr_at, fnmr_at, impostor_scores

ABSENT = "<not used>"
# Class file stems recognised as demographic, per dimension (the shipped spec: genders, origins, ages).
DEMOGRAPHIC_STEMS: dict[str, frozenset[str]] = {
    "gender": frozenset({"gender", "genders", "sex", "sexes"}),
    "origin": frozenset({"origin", "origins", "ethnicity", "ethnicities", "race", "races"}),
    "age": frozenset({"age", "ages", "age_group", "age_groups"}),
}
MIN_GENUINE_PAIRS = 20
MIN_DECISIONS = 20
MAX_GROUP_IMPOSTOR_PAIRS = 200_000


def demographic_classes(spec: Any | None, manifest_classes: Iterable[str]) -> dict[str, list[str]]:
    """{class name: its values}: the demographic classes of the spec, or else of the manifest, spec order."""
    names = {c.name: list(c.values) for c in spec.classes} if spec is not None else {}
    for name in manifest_classes:
        names.setdefault(name, [])
    wanted = frozenset().union(*DEMOGRAPHIC_STEMS.values())
    return {name: values for name, values in sorted(names.items()) if name.lower() in wanted}


def _mean(values: np.ndarray) -> float:
    return float(values.mean()) if values.size else float("nan")


def _notes(genuine: int, impostor: int, decisions: int, threshold_fmr: float) -> list[str]:
    notes = []
    if genuine < MIN_GENUINE_PAIRS:
        notes.append(f"too few genuine pairs ({genuine} < {MIN_GENUINE_PAIRS})")
    needed = int(np.ceil(1.0 / threshold_fmr)) if threshold_fmr > 0 else 0
    if impostor < needed:
        notes.append(f"too few impostor pairs for FMR {threshold_fmr:g} ({impostor} < {needed})")
    if decisions < MIN_DECISIONS:
        notes.append(f"too few filter decisions ({decisions} < {MIN_DECISIONS})")
    return notes


def demographic_rows(
    classes: Mapping[str, Sequence[str]],
    values_by_identity: Mapping[str, Mapping[str, str]],
    status_by_identity: Mapping[str, str],
    decisions: Mapping[str, bool],
    genuine_by_identity: Mapping[str, np.ndarray],
    documents: Mapping[str, np.ndarray],
    threshold: float,
    threshold_fmr: float,
    seed: int = 0,
) -> list[dict[str, Any]]:
    """One row per (class, value): counts, acceptance rate, genuine and impostor scores, and a note when thin.

    `decisions` maps each identity the filter decided to whether it was accepted; `documents` holds every
    embedded document vector by identity; `genuine_by_identity` the genuine pair scores of each identity.
    """
    rows = []
    for attribute, spec_values in classes.items():
        members: dict[str, list[str]] = {value: [] for value in spec_values}
        for identity in status_by_identity:
            members.setdefault(values_by_identity.get(identity, {}).get(attribute, ABSENT), []).append(identity)
        if not members.get(ABSENT):
            members.pop(ABSENT, None)
        for value, identities in members.items():
            rows.append(_group_row(attribute, value, identities, status_by_identity, decisions, genuine_by_identity,
                                   documents, threshold, threshold_fmr, seed))
    return rows


def _group_row(
    attribute: str,
    value: str,
    identities: list[str],
    status_by_identity: Mapping[str, str],
    decisions: Mapping[str, bool],
    genuine_by_identity: Mapping[str, np.ndarray],
    documents: Mapping[str, np.ndarray],
    threshold: float,
    threshold_fmr: float,
    seed: int,
) -> dict[str, Any]:
    decided = [decisions[i] for i in identities if i in decisions]
    genuine = np.concatenate([np.asarray(genuine_by_identity.get(i, ()), np.float32) for i in identities] or
                             [np.zeros(0, np.float32)])
    embedded = [i for i in identities if i in documents]
    accepted = [i for i in embedded if status_by_identity.get(i) == "accepted"]

    def impostors(ids: list[str]) -> np.ndarray:
        if len(ids) < 2:
            return np.zeros(0, np.float32)
        return impostor_scores(np.stack([documents[i] for i in ids]), seed=seed, max_pairs=MAX_GROUP_IMPOSTOR_PAIRS)

    impostor, accepted_impostor = impostors(embedded), impostors(accepted)
    notes = _notes(int(genuine.size), int(impostor.size), len(decided), threshold_fmr)
    return {
        "attribute": attribute,
        "value": value,
        "identities": len(identities),
        "accepted_identities": sum(status_by_identity.get(i) == "accepted" for i in identities),
        "filter_decisions": len(decided),
        "filter_accepted": int(sum(decided)),
        "acceptance_rate": sum(decided) / len(decided) if decided else float("nan"),
        "genuine_pairs": int(genuine.size),
        "mean_genuine": _mean(genuine),
        "fnmr": fnmr_at(genuine, threshold),
        "impostor_pairs": int(impostor.size),
        "mean_impostor": _mean(impostor),
        "impostor_fmr": fmr_at(impostor, threshold),
        "accepted_impostor_pairs": int(accepted_impostor.size),
        "accepted_impostor_fmr": fmr_at(accepted_impostor, threshold),
        "sufficient": not notes,
        "note": "; ".join(notes),
    }


def demographics_plot(axes: Sequence[Any], rows: list[dict[str, Any]]) -> None:
    """Three panels, one bar per group: acceptance rate, mean genuine similarity, impostor FMR (grey: thin)."""
    labels = [f"{r['attribute']}: {r['value']}" for r in rows][::-1]
    colours = ["C0" if r["sufficient"] else "0.75" for r in rows][::-1]
    for ax, key, title in zip(
        axes,
        ("acceptance_rate", "mean_genuine", "impostor_fmr"),
        ("filter acceptance rate", "mean genuine similarity", "impostor FMR at threshold"),
        strict=True,
    ):
        values = [r[key] for r in rows][::-1]
        drawn = [v for v in values if v == v]  # NaN: no data, no bar
        ax.barh(range(len(rows)), [v if v == v else 0.0 for v in values], color=colours)
        if key == "mean_genuine" and drawn:  # similarities sit near 1: show the spread, not the distance to 0
            low = min(drawn)
            ax.set_xlim(low - 0.1 * (1.0 - low) - 1e-3, 1.0)
        ax.set_title(title, fontsize=8)
        ax.tick_params(labelsize=6)
    axes[0].set_yticks(range(len(rows)), labels)  # the axes share y: the labels show on the first only
