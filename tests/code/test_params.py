from pathlib import Path

import pytest
import yaml
from pydantic import ValidationError

from pipeline.core.config import freeze_labels, load_params, parse_params, save_resolved
from pipeline.core.errors import GraftError, ParamsError

REPO = Path(__file__).resolve().parents[2]


def test_defaults_and_repo_params_load():
    p = parse_params({})
    assert p.prepare.split.train == pytest.approx(0.7)
    repo = load_params(REPO / "params.yaml")
    assert repo.validate_.labels == ["circle", "square", "triangle"]
    assert load_params(REPO / "examples/text/params.yaml").data.path == "data/raw/tickets.csv"


def test_the_repos_params_file_holds_every_key_dvc_yaml_names():
    """DVC refuses to run a stage whose params are missing from params.yaml (defaults do not count)."""
    raw = yaml.safe_load((REPO / "params.yaml").read_text())
    for name, stage in yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"].items():
        for key in stage.get("params", []):
            value = raw
            for part in key.split("."):
                assert isinstance(value, dict) and part in value, f"params.yaml lacks {key} (dvc.yaml stage {name})"
                value = value[part]


def test_sections_are_frozen():
    p = parse_params({})
    with pytest.raises(ValidationError, match="frozen"):
        p.prepare.seed = 3  # type: ignore[misc]


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ({"prepare": {"splt": {}}}, ["unknown key 'prepare.splt'", "Did you mean 'prepare.split'"]),
        ({"bogus": 1}, ["unknown key 'bogus'", "Known keys here: data, prepare, validate, select, train"]),
        ({"validate": {"image": {"min_widht": 3}}}, ["validate.image.min_widht", "min_width"]),
        ({"prepare": {"seed": "abc"}}, ["prepare.seed", "valid integer", "'abc'"]),
        ({"prepare": {"split": {"train": "0.7"}}}, ["prepare.split.train", "valid number"]),
        ({"validate": {"on_bad_rows": "skip"}}, ["validate.on_bad_rows", "'quarantine' or 'fail'"]),
        ({"validate": {"labels": "cat"}}, ["validate.labels", "valid list"]),
        ({"prepare": {"split": {"train": 0.8, "val": -0.1, "test": 0.3}}},
         ["prepare.split.val", "greater than or equal to 0", "-0.1"]),
        ({"prepare": {"split": {"train": 0.5, "val": 0.1, "test": 0.1}}}, ["prepare.split", "sum to 1"]),
        ({"data": {"header": False}}, ["data", "columns"]),
        ([1, 2], ["top level must be a mapping"]),
    ],
)
def test_bad_params_name_the_key(raw, expected):
    with pytest.raises(ParamsError) as err:
        parse_params(raw)
    for text in expected:
        assert text in str(err.value)


def test_load_params_file_errors_name_the_file(tmp_path):
    bad = tmp_path / "p.yaml"
    bad.write_text("prepare:\n  seed: [1\n")
    with pytest.raises(ParamsError, match=r"p\.yaml: not valid YAML"):
        load_params(bad)
    bad.write_text("prepare:\n  sede: 1\n")
    with pytest.raises(ParamsError, match=r"p.yaml: unknown key 'prepare.sede'"):
        load_params(bad)


def test_yaml_exponent_floats_are_numbers(tmp_path):
    path = tmp_path / "p.yaml"
    path.write_text("train:\n  lr: 1e-4\n  head_lr: 2E-3\n")
    p = load_params(path, ["train.weight_decay=5e-2"])
    assert (p.train.lr, p.train.head_lr, p.train.weight_decay) == (1e-4, 2e-3, 5e-2)


def test_candidates_take_names_or_mappings():
    p = parse_params({"select": {"candidates": ["resnet18", {"name": "x", "weights": "w", "pretrained": False}]}})
    assert [(c.name, c.weights, c.pretrained) for c in p.select.candidates] == [
        ("resnet18", None, True), ("x", "w", False)]
    with pytest.raises(ParamsError, match=r"select\.candidates\.0\.name"):
        parse_params({"select": {"candidates": [{"weights": "w"}]}})


def test_overrides_are_typed_and_checked(tmp_path):
    empty = tmp_path / "empty.yaml"
    empty.write_text("")  # an empty file: every default
    p = load_params(empty, ["prepare.seed=7", "validate.labels=[a, b]"])
    assert p.prepare.seed == 7 and p.validate_.labels == ["a", "b"]
    with pytest.raises(ParamsError, match=r"prepare\.seed"):
        load_params(empty, ["prepare.seed=seven"])
    with pytest.raises(ParamsError, match=r"KEY\.PATH=VALUE"):
        load_params(empty, ["prepare.seed"])
    with pytest.raises(ParamsError, match=r"--set 'data.path=\[unclosed': the value is not valid YAML"):
        load_params(empty, ["data.path=[unclosed"])


def test_a_params_file_that_cannot_be_read_is_named_with_the_fix(tmp_path):
    with pytest.raises(ParamsError, match=r"missing.yaml does not exist; create it"):
        load_params(tmp_path / "missing.yaml")
    with pytest.raises(ParamsError, match=r"is a folder; pass the YAML file inside it"):
        load_params(tmp_path)
    latin = tmp_path / "latin.yaml"
    latin.write_bytes("data:\n  path: caf\xe9.csv\n".encode("latin-1"))
    with pytest.raises(ParamsError, match=r"latin.yaml: not UTF-8 \(byte 0xe9 at byte 17\); re-save it as UTF-8"):
        load_params(latin)
    loop = tmp_path / "loop.yaml"
    loop.symlink_to(loop)
    with pytest.raises(ParamsError, match=r"loop.yaml"):
        load_params(loop)
    listed = tmp_path / "list.yaml"
    listed.write_text("- a\n- b\n")
    with pytest.raises(ParamsError, match=r"the top level must be a mapping"):
        load_params(listed, ["prepare.seed=1"])


def test_save_resolved_writes_only_the_stage_sections(tmp_path):
    p = parse_params({"prepare": {"seed": 3}})
    path = save_resolved(p, tmp_path, "data", "prepare")
    saved = yaml.safe_load(path.read_text())
    assert set(saved) == {"data", "prepare"}
    assert saved["prepare"]["seed"] == 3 and saved["prepare"]["split"]["test"] == pytest.approx(0.15)
    assert parse_params(saved).prepare.seed == 3  # the saved section loads back


def test_freeze_labels_keeps_comments_and_layout(tmp_path):
    path = tmp_path / "params.yaml"
    path.write_text("# top comment\nvalidate:\n  labels: []  # inferred\n  min_per_class:\n    train: 2\n")
    freeze_labels(path, ["cat", "dog"])
    text = path.read_text()
    assert "# top comment" in text and "# inferred" in text and "labels: [cat, dog]" in text
    assert load_params(path).validate_.labels == ["cat", "dog"]
    assert load_params(path).validate_.min_per_class.train == 2


def test_atomic_writes_leave_readable_files_and_no_temp(tmp_path):
    import os

    import torch
    from safetensors.torch import save_file

    from pipeline.core.io import write_atomic, write_text_atomic

    write_text_atomic(tmp_path / "a.txt", "x")
    write_atomic(tmp_path / "w.safetensors", lambda p: save_file({"t": torch.zeros(2)}, str(p)))
    umask = os.umask(0)
    os.umask(umask)
    for name in ("a.txt", "w.safetensors"):
        assert (tmp_path / name).stat().st_mode & 0o777 == 0o666 & ~umask
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.txt", "w.safetensors"]


@pytest.mark.parametrize("key", ["paths.registry", "paths.log", "data.path"])
def test_a_storage_url_with_credentials_is_refused_without_repeating_them(tmp_path, key):
    from pipeline.core.storage import Store

    secret = "s3://AKIAEXAMPLE:sentinelSECRET42@bucket/graft"
    (tmp_path / "params.yaml").write_text("{}\n")
    with pytest.raises(ParamsError) as err:
        load_params(tmp_path / "params.yaml", [f"{key}={secret}"])
    assert key in str(err.value) and "credentials in it is refused" in str(err.value)
    assert "sentinelSECRET42" not in str(err.value) and "AKIAEXAMPLE" not in str(err.value)
    with pytest.raises(GraftError) as err:
        Store(secret)
    assert "sentinelSECRET42" not in str(err.value)
