"""Loading and validating attribute specs (FLUXSynID's layout), on real files in temporary directories."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import pytest

from synid_assets.cli import main
from synid_assets.core.spec.loading import load_attribute_spec, spec_fingerprint
from synid_assets.core.spec.model import AttributeSpecError, SpecProblem
from synid_assets.core.spec.sampling import subject_word

SHIPPED = Path(__file__).resolve().parents[1] / "attributes"


def write_spec(
    root: Path,
    classes: dict[str, str | bytes],
    usage: dict[str, object] | str | None = None,
    clashes: list[object] | str | None = None,
) -> Path:
    """A spec directory; ``usage`` defaults to 1.0 for every class, a str is written verbatim."""
    root.mkdir(parents=True, exist_ok=True)
    for name, body in classes.items():
        data = body if isinstance(body, bytes) else body.encode("utf-8")
        (root / name).write_bytes(data)
    if usage is None:
        usage = dict.fromkeys(classes, 1.0)
    (root / "file_probabilities.json").write_text(
        usage if isinstance(usage, str) else json.dumps(usage, indent=4)
    )
    if clashes is not None:
        text = clashes if isinstance(clashes, str) else json.dumps(clashes, indent=4)
        (root / "attribute_clashes.json").write_text(text)
    return root


def load_error(directory: Path) -> AttributeSpecError:
    with pytest.raises(AttributeSpecError) as info:
        load_attribute_spec(directory)
    return info.value


GOOD = {"genders.txt": "Male,0.5\nFemale,0.5\n", "beard.txt": "Yes,0.4\nNo,0.6\n"}


def clash(
    fixed: str, fixed_values: list[str], secondary: str, secondary_values: list[str]
) -> dict[str, object]:
    return {
        "fixed_file": fixed,
        "fixed_attributes": fixed_values,
        "secondary_file": secondary,
        "secondary_attributes": secondary_values,
    }


# ---------------------------------------------------------------------------------------- shipped spec


def test_shipped_spec_loads_cleanly() -> None:
    spec = load_attribute_spec(SHIPPED)
    assert len(spec.classes) == 14
    assert spec.warnings == ()
    assert [c.name for c in spec.classes] == sorted(c.name for c in spec.classes)
    assert len(spec.clashes) == 7
    assert spec.clashes[0].fixed_class == "genders" and spec.clashes[0].secondary_class == "hair_styles"
    assert spec.gender_class == "genders"
    assert spec.fingerprint == spec_fingerprint(SHIPPED)
    assert spec.class_named("headwear").usage_probability == 0.01
    assert spec.class_named("eyewear").values == ("Clear non-reflective eyeglasses",)  # no final newline
    assert spec.class_named("hair_colors").file == "hair_colors.txt"
    for c in spec.classes:
        assert len(c.values) == len(c.probabilities)
        assert abs(math.fsum(c.probabilities) - 1.0) < 1e-12
        assert all(not v.endswith("\r") for v in c.values)


def test_shipped_files_keep_crlf() -> None:
    # The loader must read FLUXSynID's bytes as published; this guards the fixture itself.
    assert b"\r\n" in (SHIPPED / "ages.txt").read_bytes()


def test_class_named_unknown() -> None:
    with pytest.raises(KeyError, match="nope"):
        load_attribute_spec(SHIPPED).class_named("nope")


# --------------------------------------------------------------------------------------- good formats


def test_tolerated_formats(tmp_path: Path) -> None:
    spec_dir = write_spec(
        tmp_path / "s",
        {
            "crlf.txt": b"A,0.25\r\nB,0.75",  # CRLF, no final newline
            "commented.txt": "# a comment\n\n  A , 0.5  \n\n# another\nB,0.5   \n\n",
            "percent.txt": "A,25%\nB, 75 %\n",
            "mixed.txt": "A,50%\nB,0.5\n",
            "bom.txt": b"\xef\xbb\xbfA,1.0\n",
            "comma.txt": "Small, narrow,0.5\nWide,0.5\n",
            "percent_rounded.txt": "A,33.333%\nB,33.333%\nC,33.334%\n",
        },
    )
    spec = load_attribute_spec(spec_dir)
    assert spec.class_named("crlf").values == ("A", "B")
    assert spec.class_named("crlf").probabilities == (0.25, 0.75)
    assert spec.class_named("commented").values == ("A", "B")
    assert spec.class_named("percent").probabilities == (0.25, 0.75)
    assert spec.class_named("mixed").probabilities == (0.5, 0.5)
    assert spec.class_named("bom").values == ("A",)
    assert spec.class_named("comma").values == ("Small, narrow", "Wide")
    assert math.fsum(spec.class_named("percent_rounded").probabilities) == pytest.approx(1.0, abs=1e-12)
    assert spec.clashes == ()  # no attribute_clashes.json: no clashes


def test_probabilities_are_normalized(tmp_path: Path) -> None:
    spec = load_attribute_spec(write_spec(tmp_path, {"a.txt": "A,0.33334\nB,0.33333\nC,0.33334\n"}))
    probs = spec.class_named("a").probabilities
    assert abs(math.fsum(probs) - 1.0) < 1e-15
    assert probs[0] == pytest.approx(probs[2])


def test_unlisted_class_is_a_warning_and_unused(tmp_path: Path) -> None:
    spec = load_attribute_spec(write_spec(tmp_path, GOOD, usage={"genders.txt": 1.0}))
    assert spec.class_named("beard").usage_probability == 0.0
    assert len(spec.warnings) == 1 and "beard.txt" in spec.warnings[0]


def test_json_with_bom_and_crlf(tmp_path: Path) -> None:
    d = write_spec(tmp_path, GOOD)
    (d / "file_probabilities.json").write_bytes(
        b'\xef\xbb\xbf{\r\n "genders.txt": 1,\r\n "beard.txt": 0.5\r\n}'
    )
    assert load_attribute_spec(d).class_named("beard").usage_probability == 0.5


# ---------------------------------------------------------------------------------- class file errors

CLASS_FILE_ERRORS = [
    ("no_comma", "A,0.5\nB 0.5\n", "bad.txt:2:", "expected 'value,probability'"),
    ("empty_value", "A,0.5\n ,0.5\n", "bad.txt:2:", "empty value"),
    ("non_numeric", "A,0.5\nB,half\n", "bad.txt:2:", "not a number"),
    ("nan", "A,0.5\nB,nan\n", "bad.txt:2:", "not a number"),
    ("negative", "A,1.5\nB,-0.5\n", "bad.txt:2:", "negative"),
    ("above_one", "A,1.5\n", "bad.txt:1:", "above 1"),
    ("above_100_percent", "A,150%\n", "bad.txt:1:", "above 100%"),
    ("duplicate", "A,0.25\nB,0.5\nA,0.25\n", "bad.txt:3:", "duplicate value 'A' (first on line 1)"),
    ("sum_fraction", "A,0.5\nB,0.4\n", "bad.txt:", "sum to 0.9, expected 1"),
    ("sum_percent", "A,50%\nB,40%\n", "bad.txt:", "sum to 90%, expected 100%"),
    ("empty_class", "# nothing here\n\n", "bad.txt:", "no 'value,probability' lines"),
    ("empty_file", "", "bad.txt:", "no 'value,probability' lines"),
    ("crlf_line_numbers", "A,0.5\r\n\r\nB;0.5\r\n", "bad.txt:3:", "expected 'value,probability'"),
]


@pytest.mark.parametrize(
    ("body", "where", "what"), [c[1:] for c in CLASS_FILE_ERRORS], ids=[c[0] for c in CLASS_FILE_ERRORS]
)
def test_class_file_errors(tmp_path: Path, body: str, where: str, what: str) -> None:
    err = load_error(write_spec(tmp_path, {**GOOD, "bad.txt": body}))
    text = str(err)
    assert where in text and what in text, text
    assert all(p.path.name == "bad.txt" for p in err.problems)


def test_file_level_problem_has_no_line(tmp_path: Path) -> None:
    err = load_error(write_spec(tmp_path, {**GOOD, "bad.txt": "A,0.5\n"}))
    (problem,) = err.problems
    assert problem.line is None
    assert str(problem) == f"{tmp_path / 'bad.txt'}: probabilities sum to 0.5, expected 1"



# ------------------------------------------------------------------ percents written without '%' (weights)

WEIGHTS = "Male,45\nFemale,45\nNon-binary,10\n"  # how FLUXSynID users write weights: read as percents here


def test_values_summing_to_100_without_percent_sign_are_percents(tmp_path: Path) -> None:
    spec = load_attribute_spec(
        write_spec(tmp_path, {"genders.txt": WEIGHTS, "signed.txt": "Male,45%\nFemale,45%\nNon-binary,10%\n"})
    )
    genders = spec.class_named("genders")
    assert genders.values == ("Male", "Female", "Non-binary")
    assert genders.probabilities == pytest.approx((0.45, 0.45, 0.10), abs=1e-15)
    assert genders.probabilities == spec.class_named("signed").probabilities  # same as written with '%'
    assert math.fsum(genders.probabilities) == 1.0
    assert spec.notes == (f"{tmp_path / 'genders.txt'}: values sum to 100 without '%': read as percents",)
    assert spec.warnings == ()


def test_percents_without_sign_use_the_percent_tolerance(tmp_path: Path) -> None:
    rounded = load_attribute_spec(write_spec(tmp_path / "a", {"a.txt": "A,33.333\nB,33.333\nC,33.334\n"}))
    assert rounded.class_named("a").probabilities == pytest.approx((0.33333, 0.33333, 0.33334))
    err = load_error(write_spec(tmp_path / "b", {"a.txt": "A,50\nB,50.02\n"}))
    assert f"{tmp_path / 'b' / 'a.txt'}: probabilities sum to 100.02, expected 1 (or 100 for percents)" in str(err)


def test_fraction_files_get_no_note(tmp_path: Path) -> None:
    assert load_attribute_spec(write_spec(tmp_path, GOOD)).notes == ()
    assert load_attribute_spec(SHIPPED).notes == ()


def test_weights_summing_to_neither_1_nor_100_are_errors(tmp_path: Path) -> None:
    err = load_error(write_spec(tmp_path, {**GOOD, "bad.txt": "A,45\nB,12\n"}))
    bad = tmp_path / "bad.txt"
    assert [str(p) for p in err.problems] == [
        f"{bad}:1: probability of 'A' is above 1: 45",
        f"{bad}:2: probability of 'B' is above 1: 12",
        f"{bad}: probabilities sum to 57, expected 1 (or 100 for percents)",
    ]


def test_percents_without_sign_mixed_with_percent_lines_are_errors(tmp_path: Path) -> None:
    err = load_error(write_spec(tmp_path, {**GOOD, "bad.txt": "A,50%\nB,50\n"}))
    assert [str(p) for p in err.problems] == [f"{tmp_path / 'bad.txt'}:2: probability of 'B' is above 1: 50"]


def test_file_probabilities_are_not_read_as_percents(tmp_path: Path) -> None:
    # Usage probabilities are independent per class, not a distribution: a sum of 100 means nothing there.
    err = load_error(write_spec(tmp_path, GOOD, usage={"genders.txt": 50, "beard.txt": 50}))
    assert "probability of 'genders.txt' is outside [0, 1]: 50" in str(err)


def test_validate_prints_the_note_and_succeeds(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    d = write_spec(tmp_path, {**GOOD, "genders.txt": WEIGHTS})
    assert main(["attributes", "validate", str(d)]) == 0
    out, err = capsys.readouterr()
    assert f"note: {d / 'genders.txt'}: values sum to 100 without '%': read as percents\n" in out
    assert f"{d}: valid, 2 classes" in out and err == ""


def test_validate_reports_a_weights_file_that_sums_to_57(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    d = write_spec(tmp_path, {**GOOD, "genders.txt": "Male,45\nFemale,12\n"})
    assert main(["attributes", "validate", str(d)]) == 1
    out, err = capsys.readouterr()
    assert f"{d / 'genders.txt'}: probabilities sum to 57, expected 1 (or 100 for percents)" in err
    assert "note:" not in out + err

def test_not_utf8_names_byte_offset(tmp_path: Path) -> None:
    err = load_error(write_spec(tmp_path, {**GOOD, "bad.txt": b"A,0.5\nB\xe9b\xff,0.5\n"}))
    text = str(err)
    assert "bad.txt:2:" in text and "not valid UTF-8" in text and "byte offset 7" in text, text


def test_not_utf8_after_bom_offset_counts_bom(tmp_path: Path) -> None:
    err = load_error(write_spec(tmp_path, {**GOOD, "bad.txt": b"\xef\xbb\xbfA\xff,1\n"}))
    assert "byte offset 4" in str(err)


def test_all_problems_are_collected(tmp_path: Path) -> None:
    d = write_spec(
        tmp_path,
        {"a.txt": "A,0.5\nno comma\nB,x\n", "b.txt": "X,0.5\n", "c.txt": "C,1\n"},
        usage={"a.txt": 1, "b.txt": 2, "missing.txt": 0.5, "c.txt": 1},
        clashes=[clash("c.txt", ["Nope"], "a.txt", ["A"])],
    )
    err = load_error(d)
    files = {p.path.name for p in err.problems}
    assert files == {"a.txt", "b.txt", "file_probabilities.json", "attribute_clashes.json"}
    assert len(err.problems) == 6
    lines = str(err).splitlines()
    assert lines[0].startswith("invalid attribute spec (6 problems)")
    assert len(lines) == 7 and all(isinstance(p, SpecProblem) for p in err.problems)
    assert isinstance(err, ValueError)


# ---------------------------------------------------------------------------- file_probabilities.json


def test_missing_file_probabilities(tmp_path: Path) -> None:
    d = write_spec(tmp_path, GOOD)
    (d / "file_probabilities.json").unlink()
    text = str(load_error(d))
    assert "file_probabilities.json: missing" in text


@pytest.mark.parametrize(
    ("usage", "where", "what"),
    [
        ('{\n  "genders.txt": 1.0\n  "beard.txt": 1.0\n}', "file_probabilities.json:3:", "malformed JSON"),
        ('{"genders.txt": 1.0,}', "file_probabilities.json:1:", "column"),
        ('["genders.txt"]', "file_probabilities.json:", "expected a JSON object"),
        ('{\n"genders.txt": "high",\n"beard.txt": 1}', "file_probabilities.json:2:", "not a number: 'high'"),
        ('{\n"genders.txt": true,\n"beard.txt": 1}', "file_probabilities.json:2:", "not a number: True"),
        ('{\n"genders.txt": 1.5,\n"beard.txt": 1}', "file_probabilities.json:2:", "outside [0, 1]: 1.5"),
        ('{\n"genders.txt": -0.1,\n"beard.txt": 1}', "file_probabilities.json:2:", "outside [0, 1]"),
        (
            '{"genders.txt": 1, "beard.txt": 1,\n"hats.txt": 1}',
            "file_probabilities.json:2:",
            "does not exist",
        ),
        ('{"genders.txt": 1, "beard.txt": 1, "genders.txt": 1}', "file_probabilities.json:", "duplicate key"),
        ('{"genders.txt": 1, "beard.txt": 1, "notes.md": 1}', "file_probabilities.json:", "must name a .txt"),
    ],
    ids=[
        "malformed",
        "trailing_comma",
        "not_object",
        "string",
        "bool",
        "above_one",
        "negative",
        "missing_file",
        "duplicate_key",
        "not_txt",
    ],
)
def test_file_probabilities_errors(tmp_path: Path, usage: str, where: str, what: str) -> None:
    (tmp_path / "notes.md").write_text("not a class")
    text = str(load_error(write_spec(tmp_path / "spec", GOOD, usage=usage)))
    assert where in text and what in text, text


@pytest.mark.parametrize(
    "name", ["../outside.txt", "/etc/outside.txt", "sub/inner.txt", "sub\\inner.txt", ".."]
)
def test_file_probabilities_cannot_escape(tmp_path: Path, name: str) -> None:
    (tmp_path / "outside.txt").write_text("A,1\n")
    d = write_spec(tmp_path / "spec", GOOD, usage={"genders.txt": 1, "beard.txt": 1, name: 1})
    (d / "sub").mkdir()
    (d / "sub" / "inner.txt").write_text("A,1\n")
    text = str(load_error(d))
    assert "file_probabilities.json" in text and "plain file name inside the attributes directory" in text


@pytest.mark.skipif(not hasattr(os, "symlink"), reason="needs symlinks")
def test_symlinked_class_file_outside_is_rejected(tmp_path: Path) -> None:
    (tmp_path / "outside.txt").write_text("A,1\n")
    d = write_spec(tmp_path / "spec", GOOD)
    (d / "evil.txt").symlink_to(tmp_path / "outside.txt")
    text = str(load_error(d))
    assert "evil.txt" in text and "resolves outside the attributes directory" in text


# ------------------------------------------------------------------------------ attribute_clashes.json


def test_valid_clashes_keep_file_order(tmp_path: Path) -> None:
    rules = [
        clash("genders.txt", ["Female"], "beard.txt", ["Yes"]),
        clash("beard.txt", ["Yes"], "genders.txt", []),
    ]
    spec = load_attribute_spec(write_spec(tmp_path, GOOD, clashes=rules))
    assert [(r.fixed_class, r.secondary_class) for r in spec.clashes] == [
        ("genders", "beard"),
        ("beard", "genders"),
    ]
    assert spec.clashes[0].fixed_values == ("Female",) and spec.clashes[0].secondary_values == ("Yes",)
    assert any("never applies" in w for w in spec.warnings)


CLASH_ERRORS = [
    (
        "malformed",
        '[\n  {"fixed_file": "genders.txt",\n  }\n]',
        "attribute_clashes.json:3:",
        "malformed JSON",
    ),
    ("not_list", '{"fixed_file": "genders.txt"}', "attribute_clashes.json:", "expected a JSON list"),
    ("not_object", '[["genders.txt"]]', "attribute_clashes.json:", "rule [0]: expected an object"),
    (
        "missing_keys",
        [clash("genders.txt", ["Male"], "beard.txt", ["Yes"]), {"fixed_file": "genders.txt"}],
        "attribute_clashes.json:",
        "rule [1]: missing key(s) fixed_attributes, secondary_file, secondary_attributes",
    ),
    (
        "missing_class",
        [clash("genders.txt", ["Female"], "hats.txt", ["Cap"])],
        "attribute_clashes.json:",
        "rule [0]: secondary_file 'hats.txt': no such class file",
    ),
    (
        "value_not_in_class",
        [
            clash("genders.txt", ["Male"], "beard.txt", ["Yes"]),
            clash("genders.txt", ["Femal"], "beard.txt", ["Yes"]),
        ],
        "attribute_clashes.json:",
        "rule [1]: fixed_attributes value 'Femal' is not in class 'genders.txt'",
    ),
    (
        "secondary_value_not_in_class",
        [clash("genders.txt", ["Female"], "beard.txt", ["Maybe"])],
        "attribute_clashes.json:",
        "rule [0]: secondary_attributes value 'Maybe' is not in class 'beard.txt'",
    ),
    (
        "values_not_list",
        [clash("genders.txt", "Female", "beard.txt", ["Yes"])],  # type: ignore[arg-type]
        "attribute_clashes.json:",
        "rule [0]: fixed_attributes must be a list of strings",
    ),
    (
        "escape",
        [clash("../genders.txt", ["Female"], "beard.txt", ["Yes"])],
        "attribute_clashes.json:",
        "plain file name inside the attributes directory",
    ),
    (
        "same_class",
        [clash("genders.txt", ["Female"], "genders.txt", ["Male"])],
        "attribute_clashes.json:",
        "fixed_file and secondary_file are the same class",
    ),
]


@pytest.mark.parametrize(
    ("clashes", "where", "what"), [c[1:] for c in CLASH_ERRORS], ids=[c[0] for c in CLASH_ERRORS]
)
def test_clash_errors(tmp_path: Path, clashes: list[object] | str, where: str, what: str) -> None:
    text = str(load_error(write_spec(tmp_path, GOOD, clashes=clashes)))
    assert where in text and what in text, text


def test_clash_on_broken_class_reports_only_the_class(tmp_path: Path) -> None:
    d = write_spec(
        tmp_path,
        {**GOOD, "beard.txt": "Yes,0.4\n"},
        clashes=[clash("genders.txt", ["Male"], "beard.txt", ["Yes"])],
    )
    err = load_error(d)
    assert [p.path.name for p in err.problems] == ["beard.txt"]


# ---------------------------------------------------------------------------------------- directories


def test_missing_directory(tmp_path: Path) -> None:
    text = str(load_error(tmp_path / "nope"))
    assert "nope" in text and "does not exist" in text
    with pytest.raises(AttributeSpecError, match="does not exist"):
        spec_fingerprint(tmp_path / "nope")


def test_not_a_directory(tmp_path: Path) -> None:
    f = tmp_path / "file"
    f.write_text("x")
    assert "not a directory" in str(load_error(f))


def test_no_class_files(tmp_path: Path) -> None:
    d = write_spec(tmp_path, {}, usage="{}")
    assert "no .txt attribute class files" in str(load_error(d))


# ---------------------------------------------------------------------------------------- fingerprint


def test_fingerprint_tracks_spec_bytes_only(tmp_path: Path) -> None:
    d = write_spec(tmp_path, GOOD)
    before = spec_fingerprint(d)
    assert load_attribute_spec(d).fingerprint == before
    (d / "README.md").write_text("notes are not part of the spec")
    assert spec_fingerprint(d) == before
    (d / "beard.txt").write_bytes(b"Yes,0.4\r\nNo,0.6\r\n")  # same values, different bytes
    after = spec_fingerprint(d)
    assert after != before and load_attribute_spec(d).fingerprint == after
    (d / "attribute_clashes.json").write_text("[]")
    assert spec_fingerprint(d) != after


def test_fingerprint_independent_of_location(tmp_path: Path) -> None:
    assert spec_fingerprint(write_spec(tmp_path / "a", GOOD)) == spec_fingerprint(
        write_spec(tmp_path / "b", GOOD)
    )


# --------------------------------------------------------------------------------------- subject word


@pytest.mark.parametrize(
    ("value", "word"),
    [
        ("Male", "man"),
        ("male", "man"),
        ("Man", "man"),
        ("Female", "woman"),
        ("WOMAN", "woman"),
        ("Non-binary", "non-binary person"),
        ("nonbinary", "non-binary person"),
        ("Other", "person"),
    ],
)
def test_subject_word(value: str, word: str) -> None:
    spec = load_attribute_spec(SHIPPED)
    assert subject_word(spec, {"genders": value}) == word


def test_subject_word_without_gender(tmp_path: Path) -> None:
    shipped = load_attribute_spec(SHIPPED)
    assert subject_word(shipped, {"ages": "20-29"}) == "person"
    no_gender = load_attribute_spec(write_spec(tmp_path, {"sexes.txt": "F,1\n", "beard.txt": "Yes,1\n"}))
    assert no_gender.gender_class == "sexes"
    no_gender = load_attribute_spec(write_spec(tmp_path / "x", {"beard.txt": "Yes,1\n"}))
    assert no_gender.gender_class is None
    assert subject_word(no_gender, {"beard": "Yes"}) == "person"
