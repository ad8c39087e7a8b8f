import json
import shutil

import pandas as pd
import pytest
from conftest import SHARED, solid_image

from pipeline.core.artifacts import Workspace
from pipeline.core.config import parse_params
from pipeline.core.errors import DataError
from pipeline.core.params import DataParams, PrepareParams
from pipeline.data.prepare import MANIFEST_COLUMNS, assign_split, prepare_data, run_prepare


def _prep(path, **sections):
    p = parse_params(sections)
    return prepare_data(path, p.data, p.prepare)


def test_image_manifest_has_facts_and_hashes(image_tree, tmp_path):
    root = image_tree({"cat": 10, "dog": 8})
    res = _prep(root)
    m = res.manifest
    assert list(m.columns) == MANIFEST_COLUMNS
    assert len(m) == 18 and res.classes == ["cat", "dog"] and res.modality == "image"
    row = m[m["path"] == "cat/cat_00001.png"].iloc[0]
    assert row["label"] == "cat" and row["width"] == 32 and row["height"] == 32 and row["mode"] == "RGB"
    assert row["format"] == "PNG" and row["bytes"] == (root / "cat/cat_00001.png").stat().st_size
    import hashlib
    assert row["sha256"] == hashlib.sha256((root / "cat/cat_00001.png").read_bytes()).hexdigest()
    assert set(m["split"]) <= {"train", "val", "test"} and m["error"].isna().all()


def test_nested_folders_take_the_top_level_class(image_tree, tmp_path):
    root = image_tree({"cat": 3})
    solid_image(root / "cat" / "indoor" / "deep" / "x.jpg", seed=99)
    (root / "cat" / "notes.txt").write_text("not an image")
    res = _prep(root)
    assert "cat/indoor/deep/x.jpg" in set(res.manifest["path"])
    assert set(res.manifest["label"]) == {"cat"} and res.skipped == ["cat/notes.txt"]


def test_splits_are_deterministic_and_stable_when_data_is_added(image_tree, tmp_path):
    root = image_tree({"cat": 40, "dog": 40})
    first = _prep(root).manifest.set_index("path")["split"]
    again = _prep(root).manifest.set_index("path")["split"]
    pd.testing.assert_series_equal(first, again)
    image_tree({"cat": 30, "dog": 30}, root=root, start=1000)  # new examples arrive
    grown = _prep(root).manifest.set_index("path")["split"]
    assert len(grown) == 140
    pd.testing.assert_series_equal(grown.loc[first.index], first)  # no old example moved
    other_seed = _prep(root, prepare={"seed": 1}).manifest.set_index("path")["split"]
    assert (other_seed.loc[first.index] != first).any()


def test_split_proportions_are_close_to_the_fractions():
    from pipeline.core.params import SplitFractions

    fr = SplitFractions(train=0.6, val=0.2, test=0.2)
    splits = pd.Series([assign_split(f"k{i}", 0, fr) for i in range(20000)]).value_counts(normalize=True)
    assert splits["train"] == pytest.approx(0.6, abs=0.015)
    assert splits["test"] == pytest.approx(0.2, abs=0.015)


def test_split_folders_are_respected_and_missing_val_is_carved_from_train(image_tree, tmp_path):
    root = tmp_path / "ds"
    image_tree({"cat": 30, "dog": 30}, root=root / "train")
    image_tree({"cat": 5, "dog": 5}, root=root / "test", start=500)
    m = _prep(root).manifest
    from_test = m[m["path"].str.startswith("test/")]
    from_train = m[m["path"].str.startswith("train/")]
    assert (from_test["split"] == "test").all() and (from_test["split_source"] == "folder").all()
    assert set(from_train["split"]) == {"train", "val"}  # val carved by hash, test only from test/
    assert set(m["label"]) == {"cat", "dog"}


def test_a_split_column_sets_the_splits_like_split_folders(tmp_path):
    rows = [{"text": f"question {i}", "label": "ab"[i % 2], "split": "train"} for i in range(200)]
    rows += [{"text": f"held out {i}", "label": "ab"[i % 2], "split": " Test"} for i in range(20)]
    rows += [{"text": "no split given", "label": "a", "split": ""},
             {"text": "a typo", "label": "b", "split": "tset"}]
    pd.DataFrame(rows).to_csv(tmp_path / "q.csv", index=False)
    m = _prep(tmp_path / "q.csv").manifest
    held = m[m["text"].str.startswith("held out")]
    assert (held["split"] == "test").all() and (held["split_source"] == "column").all()
    given_train = m[m["text"].str.startswith("question")]
    assert set(given_train["split"]) == {"train", "val"}  # val carved from train by hash, never test
    assert m.loc[m["text"] == "no split given", "split_source"].item() == "hash"
    typo = m[m["text"] == "a typo"]
    assert "split is 'tset', not one of train, val, test" in typo["error"].item()
    # '' turns the column off: every row by hash
    off = _prep(tmp_path / "q.csv", data={"split_column": ""}).manifest
    assert (off["split_source"] == "hash").all() and off["error"].isna().all()


def test_parallel_and_serial_scans_agree(image_tree):
    root = image_tree({"a": 150, "b": 150})  # above the pool threshold
    serial = _prep(root, prepare={"workers": 1}).manifest
    parallel = _prep(root, prepare={"workers": 2}).manifest
    pd.testing.assert_frame_equal(serial, parallel)


def test_text_csv_manifest(text_csv):
    res = _prep(text_csv([("hello there  world", "ham"), ("win a prize", "spam")] * 3))
    m = res.manifest
    assert res.modality == "text" and len(m) == 6 and res.classes == ["ham", "spam"]
    assert m.loc[0, "text"] == "hello there  world" and m.loc[0, "n_chars"] == 18 and m.loc[0, "n_tokens"] == 3
    assert m.loc[0, "row"] == 1 and m.loc[0, "id"] == "row-1"
    assert m.loc[0, "sha256"] == m.loc[2, "sha256"]  # same text, same hash, so the same split
    assert m.loc[0, "split"] == m.loc[2, "split"]


def test_text_formats_read_alike(tmp_path):
    frame = pd.DataFrame({"body": ["a b", "c", "d e f"], "cls": ["x", "y", "x"]})
    frame.to_parquet(tmp_path / "t.parquet")
    frame.to_json(tmp_path / "t.jsonl", orient="records", lines=True)
    (tmp_path / "t.tsv").write_text('x\ta "quoted" b\ny\tc\nx\td e f\n')
    cols = {"text_column": "body", "label_column": "cls"}
    pq = _prep(tmp_path / "t.parquet", data=cols).manifest
    js = _prep(tmp_path / "t.jsonl", data=cols).manifest
    assert pq["text"].tolist() == js["text"].tolist() == ["a b", "c", "d e f"]
    tsv = _prep(tmp_path / "t.tsv", data={"header": False, "columns": ["cls", "body"], **cols}).manifest
    assert tsv["text"].tolist()[0] == 'a "quoted" b' and tsv["label"].tolist() == ["x", "y", "x"]


@pytest.mark.skipif(not (SHARED / "data/sms_spam/SMSSpamCollection").exists(),
                    reason="../shared/data/sms_spam is not present")
def test_sms_spam_headerless_tsv_reads_every_row():
    res = _prep(SHARED / "data/sms_spam/SMSSpamCollection",
                data={"format": "tsv", "header": False, "columns": ["label", "text"]})
    assert len(res.manifest) == 5574 and res.classes == ["ham", "spam"]
    assert res.manifest["error"].isna().all()


def test_run_prepare_writes_manifest_summary_and_resolved_params(image_tree, tmp_path):
    root = image_tree({"cat": 6, "dog": 6})
    out = tmp_path / "out"
    p = parse_params({"prepare": {"seed": 5}})
    run_prepare(p, Workspace.from_params(p, data=root, prepare=out))
    assert len(pd.read_parquet(out / "manifest.parquet")) == 12
    info = json.loads((out / "prepare.json").read_text())
    assert info["classes"] == ["cat", "dog"] and sum(info["counts"]["cat"].values()) == 6
    assert "seed: 5" in (out / "params.resolved.yaml").read_text()


# ---------------------------------------------------------------- bad input


def test_missing_data_path(tmp_path):
    with pytest.raises(DataError, match=r"nope' does not exist; set data.path"):
        _prep(tmp_path / "nope")


def test_empty_folder(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match=r"empty holds no images.*<class>/<file>"):
        _prep(tmp_path / "empty")


def test_csv_without_the_label_column(tmp_path):
    path = tmp_path / "d.csv"
    path.write_text("text,category\nhello,a\n")
    with pytest.raises(DataError, match=r"d.csv has no column 'label' \(its columns: text, category\); "
                                        r"set data.label_column"):
        _prep(path)


def test_unknown_text_extension_asks_for_the_format(tmp_path):
    path = tmp_path / "data.txt"
    path.write_text("a\tb\n")
    with pytest.raises(DataError, match=r"set data\.format"):
        _prep(path)


def test_non_utf8_rows_are_named_not_fatal(tmp_path):
    path = tmp_path / "d.csv"
    path.write_bytes("text,label\nfine row,a\ncaf\xe9 au lait,b\n".encode("latin-1"))
    m = _prep(path).manifest
    assert m.loc[0, "error"] is None
    assert "not valid UTF-8 (byte 0xe9" in m.loc[1, "error"] and "data.encoding" in m.loc[1, "error"]
    ok = _prep(path, data={"encoding": "latin-1"}).manifest
    assert ok.loc[1, "text"] == "café au lait" and ok["error"].isna().all()


def test_a_file_image_path_is_refused(tmp_path):
    f = solid_image(tmp_path / "one.png")
    with pytest.raises(DataError, match="images are read from a folder"):
        _prep(f, data={"modality": "image"})


def test_files_outside_class_folders_are_flagged(image_tree):
    root = image_tree({"cat": 2})
    shutil.copy(root / "cat" / "cat_00001.png", root / "stray.png")
    m = _prep(root).manifest
    assert "not inside a class folder" in m.set_index("path").at["stray.png", "error"]


def test_a_failed_prepare_leaves_the_previous_manifest(tmp_path, text_csv):
    good = text_csv()
    out = tmp_path / "out"
    run_prepare(parse_params({}), Workspace.from_params(parse_params({}), data=good, prepare=out))
    before = (out / "manifest.parquet").read_bytes(), (out / "prepare.json").read_bytes()
    bad = tmp_path / "bad.csv"
    bad.write_text("body,label\nhello,a\n")
    with pytest.raises(DataError, match="no column 'text'"):
        run_prepare(parse_params({}), Workspace.from_params(parse_params({}), data=bad, prepare=out))
    assert ((out / "manifest.parquet").read_bytes(), (out / "prepare.json").read_bytes()) == before


def test_exif_orientation_is_applied_in_prepare_and_in_the_training_loader(tmp_path):
    from PIL import Image

    from pipeline.core.inputs import open_image

    root = tmp_path / "ds" / "a"
    root.mkdir(parents=True)
    im = Image.new("RGB", (60, 20), "red")
    exif = im.getexif()
    exif[0x0112] = 6  # stored landscape, shown portrait
    im.save(root / "turned.jpg", exif=exif)
    m = _prep(tmp_path / "ds").manifest
    assert (m["width"].item(), m["height"].item()) == (20, 60)
    assert open_image(root / "turned.jpg", "turned.jpg").size == (20, 60)


def test_a_symlink_loop_or_a_dangling_link_in_the_data_is_a_named_row_not_a_crash(image_tree):
    root = image_tree({"cat": 3, "dog": 3})
    (root / "cat" / "loop1.png").symlink_to("loop2.png")
    (root / "cat" / "loop2.png").symlink_to("loop1.png")
    (root / "dog" / "gone.png").symlink_to("nowhere.png")
    m = prepare_data(root, DataParams(path=str(root)), PrepareParams(workers=1)).manifest
    errors = dict(zip(m["path"], m["error"], strict=True))
    assert "symbolic-link loop" in errors["cat/loop1.png"] and "symbolic-link loop" in errors["cat/loop2.png"]
    assert "a link to nothing" in errors["dog/gone.png"]
    assert m["error"].isna().sum() == 6
