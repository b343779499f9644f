"""The grown quality report on one real materialized batch: DET curve, demographic groups, galleries, FR evaluations.

One batch of 24 identities on the embedded defaults, with the operating threshold lowered to 0.965 so that the
strict filter rejects a few identities for similarity (the shipped threshold rejects none at this size).
"""

from __future__ import annotations

import base64
import datetime as dt
import io
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import pytest

from tests.graph_helpers import QUIET, REPO_ATTRIBUTES, materialize_batch

THRESHOLD = 0.965
IDENTITIES = 24


def _definitions(home: Path):
    import dagster as dg

    from synid_assets.core.config.profiles import load_profile
    from synid_assets.defs.assets import ALL_ASSETS, ALL_CHECKS
    from synid_assets.defs.automation import attribute_spec_job, batch_job
    from synid_assets.defs.resources import resources_from_profile

    profile = load_profile("local")
    profile["dataset"].update(seed=7, live_per_identity=2, batch_size=6)
    for entry in profile["face_analyzer"]["thresholds"]:
        if entry["fmr"] == profile["face_analyzer"]["fmr"]:
            entry["value"] = THRESHOLD
    resources = resources_from_profile(profile, str(home), str(REPO_ATTRIBUTES))
    return dg.Definitions(assets=ALL_ASSETS, asset_checks=ALL_CHECKS, jobs=[attribute_spec_job, batch_job],
                          resources=resources, executor=dg.in_process_executor), resources


@pytest.fixture(scope="module")
def materialized(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    import dagster as dg

    home = tmp_path_factory.mktemp("quality") / "synid_home"
    (home / "dagster").mkdir(parents=True)
    (home / "dagster" / "dagster.yaml").write_bytes((REPO_ATTRIBUTES.parent / "dagster.yaml").read_bytes())
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("SYNID_HOME", str(home))
        patch.setenv("DAGSTER_HOME", str(home / "dagster"))
        for variable in ("SYNID_PROFILE", "SYNID_ATTRIBUTES", "SYNID_SEED", "SYNID_BATCH_SIZE", "SYNID_LIVE"):
            patch.delenv(variable, raising=False)
        defs, resources = _definitions(home)
        instance = dg.DagsterInstance.ephemeral()
        spec_job = defs.resolve_job_def("attribute_spec_job")
        assert spec_job.execute_in_process(instance=instance, run_config=QUIET).success
        result = materialize_batch(defs, instance, "batch-00000", size=IDENTITIES)
        assert result.success
        yield {"home": home, "defs": defs, "resources": resources, "instance": instance,
               "metadata": result.asset_materializations_for_node("quality_report")[0].metadata}


def _quality(home: Path, sql: str) -> list[tuple]:
    with duckdb.connect(str(home / "quality.duckdb"), read_only=True) as con:
        return con.execute(sql).fetchall()


def _manifest(home: Path, sql: str) -> list[tuple]:
    with duckdb.connect(str(home / "manifest.duckdb"), read_only=True) as con:
        return con.execute(sql).fetchall()


def _scores(home: Path, *kinds: str) -> np.ndarray:
    names = ", ".join(f"'{k}'" for k in kinds)
    return np.array([s for (s,) in _quality(home, f"SELECT score FROM scores WHERE kind IN ({names})")])


def test_det_curve_is_monotone_and_matches_the_scores(materialized: dict[str, Any]) -> None:
    home = materialized["home"]
    det = _quality(home, "SELECT threshold, fmr, fnmr, false_matches, false_non_matches FROM det ORDER BY threshold")
    genuine = _scores(home, "genuine_live_vs_document", "genuine_live_vs_live")
    impostor = _scores(home, "impostor_document")
    (documents,), = _manifest(home, "SELECT count(*) FROM images JOIN identities USING (identity_id) "
                                    "WHERE kind = 'document' AND face_detected AND status = 'accepted'")
    assert len(det) > 20 and genuine.size and impostor.size == documents * (documents - 1) // 2
    thresholds, fmr, fnmr = (np.array(column) for column in list(zip(*det, strict=True))[:3])
    assert np.all(np.diff(fmr) <= 0) and np.all(np.diff(fnmr) >= 0)
    assert fmr[0] == 1.0 or fnmr[0] == 0.0  # the lowest observed score starts it
    assert fmr[-1] == 0.0 and fnmr[-1] == 1.0  # the highest ends it
    for t, rate_fm, rate_fnm, false_matches, false_non_matches in det:
        assert false_matches == int((impostor > t).sum()) and rate_fm == pytest.approx(false_matches / impostor.size)
        assert false_non_matches == int((genuine <= t).sum())
        assert rate_fnm == pytest.approx(false_non_matches / genuine.size)
    assert any(abs(t - THRESHOLD) < 1e-12 for t in thresholds)  # the operating point is on the curve
    metadata = materialized["metadata"]
    assert metadata["plot_det"].value.startswith("![det](data:image/png;base64,")
    page = (home / "reports" / "quality.html").read_text()
    assert "<h2>DET curve</h2>" in page and 'alt="det"' in page


def _class_values(name: str) -> list[str]:
    return [line.split(",")[0] for line in (REPO_ATTRIBUTES / f"{name}.txt").read_text().splitlines() if line]


def test_demographic_groups_add_up_and_thin_groups_are_marked(materialized: dict[str, Any]) -> None:
    home = materialized["home"]
    rows = _quality(home, "SELECT attribute, value, identities, accepted_identities, filter_decisions, "
                          "filter_accepted, genuine_pairs, impostor_pairs, sufficient, note FROM demographics")
    genuine_total = _scores(home, "genuine_live_vs_document", "genuine_live_vs_live").size
    (decisions, accepted_decisions), = _manifest(home, "SELECT count(*), count(*) FILTER (WHERE accepted) "
                                                       "FROM filter_decisions")
    (accepted,), = _manifest(home, "SELECT count(*) FROM identities WHERE status = 'accepted'")
    assert decisions > accepted_decisions  # the lowered threshold rejected some
    for attribute in ("genders", "origins", "ages"):
        group = [r for r in rows if r[0] == attribute]
        # Every value of the spec's class file is a group, even one no identity drew.
        assert set(_class_values(attribute)) <= {r[1] for r in group}
        sums = [sum(r[k] for r in group) for k in (2, 3, 4, 5, 6)]
        assert sums == [IDENTITIES, accepted, decisions, accepted_decisions, genuine_total]
        for value, identities, impostor_pairs in ((r[1], r[2], r[7]) for r in group):
            (embedded,), = _manifest(home, "SELECT count(*) FROM identity_attributes a JOIN images i "
                                           "USING (identity_id) WHERE i.kind = 'document' AND i.face_detected AND "
                                           f"a.attribute = '{attribute}' AND a.value = '{value}'")
            assert impostor_pairs == embedded * (embedded - 1) // 2  # all pairs within the group
            assert embedded <= identities
    empty = [r for r in rows if r[2] == 0]
    assert empty and all(not r[8] and "too few genuine pairs (0 < 20)" in r[9] for r in empty)
    assert all(not r[8] and r[9] for r in rows)  # 24 identities: every group is too thin, and says why
    metadata = materialized["metadata"]["demographics"].value
    assert metadata.startswith("| group |") and "genders: Female" in metadata and "too few" in metadata
    page = (home / "reports" / "quality.html").read_text()
    assert "<h2>Demographic groups</h2>" in page and "<tr class='thin'>" in page and 'alt="demographics"' in page


def test_galleries_show_the_pairs_they_claim(materialized: dict[str, Any]) -> None:
    from PIL import Image

    home = materialized["home"]
    gallery = _quality(home, "SELECT kind, rank, identity_id, other_identity_id, similarity, threshold, image_path, "
                             "other_image_path FROM gallery ORDER BY kind, rank")
    accepted = [g for g in gallery if g[0] == "accepted_most_similar"]
    rejected = [g for g in gallery if g[0] == "rejected_near_threshold"]
    status = dict(_manifest(home, "SELECT identity_id, status FROM identities"))
    # The most similar accepted pairs are the top impostor scores among accepted documents, at or below the
    # threshold (strict mode), highest first.
    impostor = np.sort(_scores(home, "impostor_document"))[::-1]
    assert len(accepted) == 8
    assert [g[4] for g in accepted] == pytest.approx(impostor[:8].tolist(), abs=1e-6)
    assert all(g[4] <= THRESHOLD and status[g[2]] == status[g[3]] == "accepted" for g in accepted)
    # The rejections are those nearest above the threshold, with the identity they matched.
    decisions = _manifest(home, "SELECT identity_id, nearest_identity_id, similarity FROM filter_decisions "
                                "WHERE rejection_reason = 'similar' "
                                "ORDER BY similarity - threshold, identity_id")
    assert rejected and [(g[2], g[3]) for g in rejected] == [(d[0], d[1]) for d in decisions[:8]]
    assert all(g[4] > g[5] == THRESHOLD and status[g[2]] == "rejected_similar" for g in rejected)
    assert [g[4] - g[5] for g in rejected] == sorted(g[4] - g[5] for g in rejected)
    for g in gallery:
        assert (home / g[6]).is_file() and (home / g[7]).is_file() and "aligned_document" in g[6]
    page = (home / "reports" / "quality.html").read_text()
    assert page.count('src="data:image/jpeg;base64,') == len(gallery)
    for g in rejected:
        assert f"{g[2]} | {g[3]}<br>similarity {g[4]:.4f}" in page
    for key, pairs in (("gallery_accepted", accepted), ("gallery_rejected", rejected)):
        markdown = materialized["metadata"][key].value
        encoded = markdown.split("base64,", 1)[1].split(")", 1)[0]
        sheet = Image.open(io.BytesIO(base64.b64decode(encoded)))
        assert sheet.format == "JPEG" and len(encoded) < 60_000
        assert sheet.height >= 48 and all(p[2] in markdown for p in pairs)


def _write_evaluations(home: Path) -> None:
    """evaluation.duckdb as the training code writes it: two checkpoints of one model on two sets."""
    start = dt.datetime(2025, 1, 1, 12, 0)
    with duckdb.connect(str(home / "evaluation.duckdb")) as con:
        con.execute("CREATE TABLE fr_evaluations (model_dir VARCHAR, checkpoint VARCHAR, epoch INTEGER, "
                    "set_name VARCHAR, accuracy DOUBLE, std DOUBLE, threshold DOUBLE, pairs INTEGER, "
                    "created TIMESTAMP)")
        con.executemany("INSERT INTO fr_evaluations VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)", [
            ("runs/cpu", "epoch_1.pt", 1, "lfw", 0.61, 0.02, 1.4, 600, start),
            ("runs/cpu", "epoch_2.pt", 2, "lfw", 0.7325, 0.015, 1.3, 600, start + dt.timedelta(hours=1)),
            ("runs/cpu", "epoch_1.pt", 1, "agedb_30", 0.5875, 0.03, 1.5, 600, start),
        ])


def test_fr_evaluations_absent_then_latest_per_set(materialized: dict[str, Any]) -> None:
    import dagster as dg

    from synid_assets.defs.assets import quality_report

    home = materialized["home"]
    assert "no FR evaluation yet" in (home / "reports" / "quality.html").read_text()
    assert materialized["metadata"]["fr_evaluation"].value == "no FR evaluation yet"
    assert _quality(home, "SELECT count(*) FROM fr_evaluations") == [(0,)]
    _write_evaluations(home)
    # The report alone, as after an evaluation: the manifest and embeddings are already there.
    result = dg.materialize([quality_report], resources=materialized["resources"], instance=materialized["instance"],
                            run_config=QUIET)
    assert result.success
    latest = _quality(home, "SELECT set_name, checkpoint, accuracy, epoch FROM fr_evaluations ORDER BY set_name")
    assert latest == [("agedb_30", "epoch_1.pt", 0.5875, 1), ("lfw", "epoch_2.pt", 0.7325, 2)]
    page = (home / "reports" / "quality.html").read_text()
    assert "no FR evaluation yet" not in page and "0.7325" in page and "0.5875" in page and ">0.61<" not in page
    table = result.asset_materializations_for_node("quality_report")[0].metadata["fr_evaluation"].value
    assert table.splitlines()[0].startswith("| set_name | accuracy |") and "| lfw | 0.7325 |" in table
    # The report only read the file: the training code's table is untouched.
    with duckdb.connect(str(home / "evaluation.duckdb"), read_only=True) as con:
        assert con.execute("SELECT count(*) FROM fr_evaluations").fetchone() == (3,)
