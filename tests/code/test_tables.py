"""Strict data reading: malformed rows are named and set aside, never shifted, cast or trained on."""

import gzip
import json
import zipfile

import pandas as pd
import pytest

from pipeline.core.artifacts import Workspace
from pipeline.core.config import parse_params
from pipeline.core.errors import DataError, DataValidationError
from pipeline.data.prepare import prepare_data, run_prepare
from pipeline.data.tables import ROW_ERRORS, read_table
from pipeline.data.validate import run_validate


def _rows(n=40):
    return [(f"message number {i}", "ab"[i % 2]) for i in range(n)]


def _stage(tmp_path, path, **sections):
    p = parse_params(sections)
    ws = Workspace.from_params(p, data=path, prepare=tmp_path / "prep", validate=tmp_path / "val")
    run_prepare(p, ws)
    return run_validate(p, ws)


def _quarantined(tmp_path):
    q = pd.read_csv(tmp_path / "val" / "quarantine.csv")
    return dict(zip(q["id"], q["reason"], strict=True))


def test_a_tsv_row_with_an_extra_tab_is_named_by_line_and_nothing_shifts(tmp_path):
    lines = ["text\tlabel"] + [f"{t}\t{lbl}" for t, lbl in _rows()]
    lines[1] = "message number 0\textra\ta"  # the first data row: pandas made column 0 the index
    path = tmp_path / "d.tsv"
    path.write_text("\n".join(lines) + "\n")
    frame = read_table(path, parse_params({}).data)
    assert frame.attrs[ROW_ERRORS] == {0: "line 2 has 3 fields where the header has 2: a tab inside an "
                                          "unquoted field? remove it or fix the row"}
    assert frame["text"].tolist()[1:3] == ["message number 1", "message number 2"]
    assert frame["label"].tolist()[1:3] == ["b", "a"]  # columns in place
    report = _stage(tmp_path, path)
    assert report.success and len(report.accepted) == 39
    assert _quarantined(tmp_path)["row-1"].startswith("line 2 has 3 fields")


def test_a_csv_row_with_too_few_fields_is_a_row_error(tmp_path):
    path = tmp_path / "d.csv"
    path.write_text("text,label\n" + "".join(f"{t},{lbl}\n" for t, lbl in _rows()) + "only text here\n")
    frame = read_table(path, parse_params({}).data)
    assert frame.attrs[ROW_ERRORS] == {40: "line 42 has 1 fields where the header has 2: a comma inside an "
                                           "unquoted field? quote the field or fix the row"}


@pytest.mark.parametrize(("value", "kind"), [(42, "number"), (3.5, "number"), (["a", "b"], "list"),
                                             ({"k": "v"}, "object"), (True, "boolean")])
def test_a_jsonl_text_that_is_not_a_string_is_never_cast(tmp_path, value, kind):
    rows = [{"text": t, "label": lbl} for t, lbl in _rows()] + [{"text": value, "label": "a"}]
    path = tmp_path / "d.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    m = prepare_data(path, parse_params({}).data, parse_params({}).prepare).manifest
    bad = m[m["row"] == 41].iloc[0]
    assert bad["error"].startswith(f"text is a {kind} (") and "not a string" in bad["error"]
    assert bad["text"] == ""  # nothing like "42" or "['a', 'b']" reaches a model
    assert m["error"].notna().sum() == 1


def test_jsonl_lines_that_are_not_objects_and_integer_labels(tmp_path):
    path = tmp_path / "d.jsonl"
    deep = "[" * 100_000 + "]" * 100_000
    path.write_text('{"text": "free prize", "label": 1}\n' + '{"text": "hello", "label": 0.0}\n'
                    + '["text", "a"]\n' + "{not json\n" + deep + "\n" + '{"text": "x", "label": [1]}\n')
    frame = read_table(path, parse_params({}).data)
    assert frame["label"].tolist()[:2] == ["1", "0"]  # integer labels read as their digits
    errors = frame.attrs[ROW_ERRORS]
    assert errors[2].startswith("line 3 is a JSON list, not an object")
    assert errors[3].startswith("line 4 is not valid JSON")
    assert errors[4].startswith("line 5 is not valid JSON")  # nesting beyond the parser's depth
    assert errors[5].startswith("label is a list ([1])") and "not a class name" in errors[5]


def test_parquet_nulls_are_missing_and_non_strings_are_refused(tmp_path):
    texts = [t for t, _ in _rows()] + [None, "  "]
    pd.DataFrame({"text": texts, "label": ["a", "b"] * 21}).to_parquet(tmp_path / "d.parquet")
    pd.DataFrame({"text": [1, 2], "label": ["a", "b"]}).to_parquet(tmp_path / "ints.parquet")
    m = prepare_data(tmp_path / "d.parquet", parse_params({}).data, parse_params({}).prepare).manifest
    assert m.loc[m["row"] == 41, "text"].item() == ""  # a null is empty, never the text "None"
    assert m.loc[m["row"] == 42, "error"].item() == "text has no visible character (only whitespace or control characters): fill it in or remove the row"
    ints = read_table(tmp_path / "ints.parquet", parse_params({}).data)
    assert ints.attrs[ROW_ERRORS][0].startswith("text is a number (1), not a string")


@pytest.mark.parametrize("blank", [" ", "\t\t", "\u00a0", "\u2003", "\n \r\n", "\u3000", "\u200b", "\ufeff "])
def test_whitespace_only_texts_are_empty(tmp_path, blank):
    rows = [{"text": t, "label": lbl} for t, lbl in _rows()] + [{"text": blank, "label": "a"}]
    path = tmp_path / "d.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    _stage(tmp_path, path)
    assert _quarantined(tmp_path) == {"row-41": "text has no visible character (only whitespace or control characters): fill it in or remove the row"}


@pytest.mark.parametrize("name", ["d.csv.zip", "d.zip", "d.csv.gz", "d.csv"])
def test_an_archive_is_named_with_extract_it_first(tmp_path, name):
    path = tmp_path / name
    payload = "text,label\n" + "".join(f"{t},{lbl}\n" for t, lbl in _rows())
    if name.endswith("zip"):
        with zipfile.ZipFile(path, "w") as z:
            z.writestr("d.csv", payload)
    else:  # gzip bytes, under a .gz name or disguised as .csv
        path.write_bytes(gzip.compress(payload.encode()))
    with pytest.raises(DataError, match="is a compressed archive; extract it first"):
        read_table(path, parse_params({"data": {"format": "csv"}}).data)


def _labelled(tmp_path, labels, odd=None, every=10):
    rows = [f"message number {i},{odd if odd and i % every == every - 1 else labels[i % len(labels)]}"
            for i in range(60)]
    path = tmp_path / "d.csv"
    path.write_text("text,label\n" + "\n".join(rows) + "\n")
    return path


def test_labels_differing_only_by_case_or_space_stop_the_run_with_the_groups_named(tmp_path):
    path = _labelled(tmp_path, ["spam", "Spam", '"spam "', "ham", "HAM"])
    params = tmp_path / "params.yaml"
    params.write_text("validate:\n  labels: []\n")
    with pytest.raises(DataValidationError) as err:
        _stage(tmp_path, path)
    assert "labels ['HAM', 'ham'] differ only by case or surrounding space" in str(err.value)
    assert "labels ['Spam', 'spam'] differ only by case" in str(err.value)


def test_a_row_label_that_differs_from_a_listed_class_by_case_says_so(tmp_path):
    path = _labelled(tmp_path, ["spam", "ham"], odd="Spam")
    report = _stage(tmp_path, path, validate={"labels": ["ham", "spam"]})
    assert report.success
    q = _quarantined(tmp_path)
    assert q["row-10"] == "label 'Spam' differs from the class 'spam' only by case or surrounding space: fix the row's spelling"


@pytest.mark.parametrize("missing", ["NaN", "NA", "null", "None", "n/a"])
def test_labels_spelt_like_missing_values_are_missing_unless_listed(tmp_path, missing):
    path = _labelled(tmp_path, ["spam", "ham"], odd=missing)
    report = _stage(tmp_path, path)
    assert report.labels == ["ham", "spam"] and len(report.quarantine) == 6
    assert _quarantined(tmp_path)["row-10"].startswith(f"label {missing!r} looks like a missing value")
    listed = _stage(tmp_path, path, validate={"labels": ["ham", "spam", missing],
                                              "min_per_class": {"train": 1, "val": 0, "test": 0}})
    assert listed.success and len(listed.quarantine) == 0  # listed explicitly: a real class
