import json
import os
import shutil

import pandas as pd
import pytest
from conftest import png_header_only, solid_image
from PIL import Image

from pipeline.core.artifacts import Workspace
from pipeline.core.config import load_params, parse_params
from pipeline.core.errors import DataValidationError
from pipeline.data.prepare import run_prepare
from pipeline.data.validate import run_validate


def _stage(tmp_path, data_path, params_file=None, **sections):
    """prepare + validate into tmp_path/{prep,val}; returns the report."""
    p = parse_params(sections) if params_file is None else load_params(params_file)
    ws = Workspace.from_params(p, params_file, data=data_path, prepare=tmp_path / "prep", validate=tmp_path / "val")
    run_prepare(p, ws)
    return run_validate(p, ws)


def _quarantined(tmp_path):
    q = pd.read_csv(tmp_path / "val" / "quarantine.csv")
    return dict(zip(q["id"], q["reason"], strict=True))


def test_image_happy_path_writes_all_outputs(image_tree, tmp_path):
    report = _stage(tmp_path, image_tree({"cat": 30, "dog": 30}))
    assert report.success and len(report.accepted) == 60 and report.labels == ["cat", "dog"]
    out = tmp_path / "val"
    assert len(pd.read_parquet(out / "manifest.parquet")) == 60
    saved = json.loads((out / "validation.json").read_text())
    assert saved["summary"]["success"] and saved["great_expectations"]["rows"]["success"]
    assert "PASSED" in (out / "report.html").read_text()
    assert json.loads((out / "summary.json").read_text())["accepted"] == 60
    assert load_params(out / "params.resolved.yaml").validate_.labels == ["cat", "dog"]


def test_text_happy_path(text_csv, tmp_path):
    report = _stage(tmp_path, text_csv())
    assert report.success and report.modality == "text" and len(report.accepted) == 40


def test_inferred_labels_are_frozen_into_params(image_tree, tmp_path):
    params_file = tmp_path / "params.yaml"
    params_file.write_text(f"data:\n  path: {image_tree({'cat': 30, 'dog': 30})}\n")
    report = _stage(tmp_path, None, params_file)
    assert report.labels_inferred
    assert load_params(params_file).validate_.labels == ["cat", "dog"]


def _bad_image_case(tmp_path, image_tree, make_bad):
    root = image_tree({"cat": 30, "dog": 30})
    bad_rel = make_bad(root)
    report = _stage(tmp_path, root)
    reasons = _quarantined(tmp_path)
    assert report.success, report.failures  # one bad row is quarantined, the run goes on
    assert bad_rel in reasons and len(reasons) == 1
    assert bad_rel not in set(report.accepted["id"])
    return reasons[bad_rel]


def test_truncated_jpeg_is_quarantined(tmp_path, image_tree):
    def make(root):
        path = root / "cat" / "trunc.jpg"
        Image.effect_noise((256, 256), 80).convert("RGB").save(path, quality=95)
        data = path.read_bytes()
        path.write_bytes(data[: len(data) * 2 // 3])  # the header survives, the pixels do not
        return "cat/trunc.jpg"

    assert "image does not decode" in _bad_image_case(tmp_path, image_tree, make)


def test_non_image_with_image_extension_is_quarantined(tmp_path, image_tree):
    def make(root):
        (root / "dog" / "notes.jpg").write_text("this is not a picture")
        return "dog/notes.jpg"

    assert "not an image" in _bad_image_case(tmp_path, image_tree, make)


def test_decompression_bomb_is_refused(tmp_path, image_tree):
    assert Image.MAX_IMAGE_PIXELS is not None  # the limit stays on

    def make(root):
        png_header_only(root / "cat" / "bomb.png", 40000, 40000)
        return "cat/bomb.png"

    assert "decompression bomb" in _bad_image_case(tmp_path, image_tree, make)


def test_symlink_outside_the_data_root_is_refused(tmp_path, image_tree):
    outside = solid_image(tmp_path / "elsewhere" / "secret.png", seed=500)

    def make(root):
        os.symlink(outside, root / "cat" / "link.png")
        return "cat/link.png"

    reason = _bad_image_case(tmp_path, image_tree, make)
    assert "symlink points outside the data root" in reason and "secret.png" in reason


def test_one_pixel_image_is_too_small(tmp_path, image_tree):
    def make(root):
        solid_image(root / "cat" / "dot.png", size=(1, 1), seed=321)
        return "cat/dot.png"

    reason = _bad_image_case(tmp_path, image_tree, make)
    assert "image is 1x1" in reason and "validate.image" in reason


@pytest.mark.parametrize(("mode", "fmt", "ext", "note"),
                         [("CMYK", "JPEG", "jpg", "CMYK"), ("I;16", "PNG", "png", "16-bit")])
def test_cmyk_and_16_bit_images_are_refused(tmp_path, image_tree, mode, fmt, ext, note):
    def make(root):
        solid_image(root / "dog" / f"odd.{ext}", mode=mode, fmt=fmt, seed=77)
        return f"dog/odd.{ext}"

    reason = _bad_image_case(tmp_path, image_tree, make)
    assert note in reason and "convert it to RGB" in reason


def test_empty_class_folder_stops_the_run(tmp_path, image_tree):
    root = image_tree({"cat": 30, "dog": 30})
    (root / "bird").mkdir()
    with pytest.raises(DataValidationError) as err:
        _stage(tmp_path, root)
    msg = str(err.value)
    assert "class 'bird' has 0 usable example(s) in train" in msg and "bird has no usable images" in msg
    assert "add examples" in msg
    assert not (tmp_path / "val" / "manifest.parquet").exists()
    assert "FAILED" in (tmp_path / "val" / "report.html").read_text()


def test_label_never_seen_before_is_quarantined(tmp_path, text_csv):
    rows = [(f"text {i} {lbl}", lbl) for lbl in ("ham", "spam") for i in range(20)] + [("odd one", "eggs")]
    report = _stage(tmp_path, text_csv(rows), validate={"labels": ["ham", "spam"]})
    reasons = _quarantined(tmp_path)
    assert list(reasons) == ["row-41"]
    assert "label 'eggs' is not one of validate.labels" in reasons["row-41"]
    assert report.success


def test_csv_with_an_empty_text_is_quarantined(tmp_path, text_csv):
    rows = [(f"text {i} {lbl}", lbl) for lbl in ("ham", "spam") for i in range(20)] + [("", "ham")]
    _stage(tmp_path, text_csv(rows))
    assert _quarantined(tmp_path) == {"row-41": "text is empty: fill it in or remove the row"}


def test_non_utf8_csv_row_is_quarantined_with_its_row(tmp_path):
    rows = "".join(f"message {i},{'ab'[i % 2]}\n" for i in range(80))
    path = tmp_path / "d.csv"
    path.write_bytes(b"text,label\n" + rows.encode() + "na\xefve,a\n".encode("latin-1"))
    _stage(tmp_path, path)
    assert "not valid UTF-8" in _quarantined(tmp_path)["row-81"]


def _split_tree(tmp_path, image_tree):
    root = tmp_path / "ds"
    image_tree({"cat": 12, "dog": 12}, root=root / "train")
    image_tree({"cat": 3, "dog": 3}, root=root / "val", start=200)
    image_tree({"cat": 3, "dog": 3}, root=root / "test", start=300)
    shutil.copy(root / "train/cat/cat_00001.png", root / "test/cat/copy.png")
    return root


def test_a_copy_across_splits_is_quarantined_keeping_the_earliest_split(tmp_path, image_tree):
    report = _stage(tmp_path, _split_tree(tmp_path, image_tree))
    assert report.success
    assert _quarantined(tmp_path) == {"test/cat/copy.png": (
        "the same content as train/cat/cat_00001.png in train: a copy in test would leak it; "
        "the train copy is kept (remove this one)")}
    assert "train/cat/cat_00001.png" in set(report.accepted["path"])


def test_a_copy_across_splits_stops_the_run_when_bad_rows_fail(tmp_path, image_tree):
    with pytest.raises(DataValidationError, match="on_bad_rows is 'fail'"):
        _stage(tmp_path, _split_tree(tmp_path, image_tree), validate={"on_bad_rows": "fail"})


@pytest.mark.parametrize("second_split", ["train", "test"])
def test_the_same_text_under_two_labels_is_a_conflict_with_both_rows_named(tmp_path, second_split):
    rows = [f"message number {i},{'ab'[i % 2]},train" for i in range(60)]
    rows += [f"held out {i},{'ab'[i % 2]},test" for i in range(10)]
    rows += ["win a free prize now,a,train", f"win a free prize now,b,{second_split}"]
    path = tmp_path / "d.csv"
    path.write_text("text,label,split\n" + "\n".join(rows) + "\n")
    report = _stage(tmp_path, path)
    assert report.success
    q = _quarantined(tmp_path)
    assert set(q) == {"row-71", "row-72"}  # both copies: which label is right is for a person to say
    assert q["row-71"] == q["row-72"] and q["row-71"].startswith("label conflict")
    assert f"row-71 (train) as 'a', row-72 ({second_split}) as 'b'" in q["row-71"]


def test_duplicates_within_a_split_are_reported_not_fatal(tmp_path, image_tree):
    root = image_tree({"cat": 30, "dog": 30})
    shutil.copy(root / "cat/cat_00001.png", root / "cat/again.png")
    report = _stage(tmp_path, root)
    assert report.success and any("share their content" in w for w in report.warnings)


def test_on_bad_rows_fail_stops_the_run(tmp_path, image_tree):
    root = image_tree({"cat": 30, "dog": 30})
    (root / "dog" / "notes.jpg").write_text("nope")
    with pytest.raises(DataValidationError, match="on_bad_rows is 'fail'"):
        _stage(tmp_path, root, validate={"on_bad_rows": "fail"})


def test_too_many_bad_rows_stop_the_run(tmp_path, image_tree):
    root = image_tree({"cat": 30, "dog": 30})
    for i in range(20):
        (root / "dog" / f"bad{i}.png").write_text("nope")
    with pytest.raises(DataValidationError, match=r"above validate\.max_bad_fraction"):
        _stage(tmp_path, root)


def test_a_failed_run_leaves_earlier_outputs_and_params_alone(tmp_path, image_tree):
    root = image_tree({"cat": 30, "dog": 30})
    params_file = tmp_path / "params.yaml"
    params_file.write_text(f"data:\n  path: {root}\nvalidate:\n  labels: []\n")
    _stage(tmp_path, None, params_file)
    before_params = params_file.read_text()
    before_manifest = (tmp_path / "val" / "manifest.parquet").read_bytes()
    (root / "bird").mkdir()  # now the data is bad
    params_file.write_text(before_params.replace("labels: [cat, dog]", "labels: []"))
    before_params = params_file.read_text()
    with pytest.raises(DataValidationError):
        _stage(tmp_path, None, params_file)
    assert params_file.read_text() == before_params  # no labels frozen from a failed run
    assert (tmp_path / "val" / "manifest.parquet").read_bytes() == before_manifest
    assert list(root.glob("*/*.png"))  # the raw data is untouched


def test_manifest_missing_columns_is_refused(tmp_path, image_tree):
    from pipeline.data.validate import validate_manifest

    with pytest.raises(DataValidationError, match=r"lacks columns \['sha256'\]; re-run `graft prepare`"):
        validate_manifest(pd.DataFrame({"id": ["a"], "modality": ["image"], "label": ["x"], "split": ["train"],
                                        "error": [None]}), parse_params({}).validate_, ["x"], str(tmp_path))
