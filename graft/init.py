"""`graft init DIR --data PATH`: a graft workspace in a folder of the user's own.

It writes params.yaml (only what differs from the defaults: the data, what it is, the labels and
the candidate models), dvc.yaml (the package's stage graph, reading its values from
.graft/params.yaml: see pipeline/workspace.py), .gitignore and .dvcignore; runs `dvc init`
(inside a git repository: with git, as a sub-folder of it if need be; otherwise --no-scm), adds
a local DVC remote (dvcstore/), and `dvc add`s the data when it lies inside DIR (data outside is
referenced by its absolute path and versioned by dvc.lock). An existing workspace is refused
without --force; nothing is written before the data has been read.
"""

from __future__ import annotations

import subprocess
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from string import Template

import yaml

from flows.steps import dvc
from pipeline.core.errors import GraftError
from pipeline.core.io import write_text_atomic
from pipeline.core.params import DataParams, PathsParams
from pipeline.data.detect import Detected, detect
from pipeline.modalities.registry import get_modality
from pipeline.workspace import RESOLVED, write_resolved

MARKERS = ("params.yaml", "dvc.yaml", ".dvc")
GIVEN_NOTE = "the model given to graft init"


@dataclass
class InitResult:
    root: Path
    detected: Detected
    data_ref: str  # data.path as params.yaml holds it
    tracked: bool  # `dvc add`ed (inside the workspace)
    scm: str  # git | git (sub-folder) | none
    written: list[str] = field(default_factory=list)
    next_commands: list[str] = field(default_factory=list)


def _template(name: str) -> str:
    return resources.files("graft").joinpath("templates", name).read_text(encoding="utf-8")


def _git_root(root: Path) -> Path | None:
    try:
        out = subprocess.run(["git", "rev-parse", "--show-toplevel"], cwd=root, capture_output=True, text=True,
                             timeout=30)
    except (OSError, subprocess.SubprocessError):
        return None
    return Path(out.stdout.strip()).resolve() if out.returncode == 0 and out.stdout.strip() else None


def _sub(text: str) -> str:
    return text.replace("${", "${graft.")


def workspace_dvc_yaml() -> str:
    """The package's dvc.yaml for a workspace: values from .graft/params.yaml (`graft.<key>`),
    and each stage's code as a hash there (`graft.code.<stage>`) instead of source-file deps."""
    doc = yaml.safe_load(_template("dvc.yaml.tmpl"))
    for name, stage in doc["stages"].items():
        stage["cmd"] = _sub(stage["cmd"])
        stage["deps"] = [_sub(d) for d in stage.get("deps", []) if str(d).startswith("${")]
        stage["params"] = [{str(RESOLVED): [f"graft.{p}" for p in stage.get("params", [])] + [f"graft.code.{name}"]}]
        for key in ("outs", "metrics", "plots"):
            if key in stage:
                stage[key] = [{_sub(next(iter(e))): next(iter(e.values()))} if isinstance(e, dict) else _sub(e)
                              for e in stage[key]]
    head = ("# graft's stage graph (written by `graft init`). Values come from .graft/params.yaml, which\n"
            "# `graft run` rewrites from params.yaml and graft's defaults before `dvc repro`; each stage\n"
            "# also depends on the hash of the graft code it runs (graft.code.<stage>).\n")
    return head + yaml.safe_dump({"vars": [str(RESOLVED)], "stages": doc["stages"]}, sort_keys=False)


def _flow(value: object) -> str:
    return yaml.safe_dump(value, default_flow_style=True, width=4096).removesuffix("...\n").strip()


def params_yaml(d: Detected, data_ref: str, outside: bool, model: str | None, weights: str | None) -> str:
    kind = get_modality(d.modality)
    if model:
        candidates, note = [{"name": model, **({"weights": weights} if weights else {})}], GIVEN_NOTE
    else:
        candidates, note = list(kind.default_candidates), kind.weights_note
    default = DataParams()
    columns = "".join(f"  {key}: {_flow(getattr(d, key))}\n" for key in ("text_column", "label_column")
                      if not kind.folder_data and getattr(d, key) != getattr(default, key))
    return Template(_template("params.yaml.tmpl")).substitute(
        data_path=_flow(data_ref), modality=d.modality, columns=columns, labels=_flow(d.labels), weights_note=note,
        data_comment="  # outside the workspace: versioned by dvc.lock, not `dvc add`" if outside else "",
        candidates="".join(f"    - {_flow(c)}\n" for c in candidates))


def _ignores() -> tuple[str, str]:
    p = PathsParams()
    local = sorted({f"/{Path(x).parts[0]}/" for x in (p.prepare, p.registry, p.cache, p.log)} | {"/dvcstore/",
                                                                                                 f"/{RESOLVED.parent}/"})
    gitignore = "# graft: stage outputs, the registry, the production log, caches and the local DVC remote\n"
    return gitignore + "\n".join([*local, f"/{p.inbox}/"]) + "\n", "\n".join(["/dvcstore/", f"/{p.cache}/"]) + "\n"


def init_workspace(root: Path, data: Path, *, force: bool = False, model: str | None = None,
                   weights: str | None = None, text_column: str | None = None,
                   label_column: str | None = None) -> InitResult:
    root = root.resolve()
    if root.exists() and not root.is_dir():
        raise GraftError(f"{root} is a file; graft init needs a folder (it is created when missing)")
    existing = [m for m in MARKERS if (root / m).exists()]
    if existing and not force:
        raise GraftError(f"{root} is already a workspace ({', '.join(existing)} exist); nothing was changed. "
                         "Pass --force to rewrite params.yaml and dvc.yaml")
    try:
        data = data.expanduser().resolve(strict=True)
    except (OSError, RuntimeError):
        raise GraftError(f"--data {data} does not exist (or is a symbolic-link loop); pass a folder of class "
                         "folders or a CSV/TSV/Parquet/JSONL file") from None
    if data == root:
        raise GraftError(f"--data {data} is the workspace itself; put the data in a folder inside it, e.g. {root}/data")
    detected = detect(data, text_column, label_column)  # a DataError here: nothing written yet
    inside = root in data.parents
    data_ref = data.relative_to(root).as_posix() if inside else str(data)
    try:
        root.mkdir(parents=True, exist_ok=True)
        probe = root / ".graft-write-test"
        probe.write_text("")
        probe.unlink()
    except OSError as exc:
        raise GraftError(f"cannot write in {root} ({exc.strerror}); choose a folder you can write to") from None
    git_root = _git_root(root)
    scm = "none" if git_root is None else ("git" if git_root == root else "git (sub-folder)")
    written = []
    gitignore, dvcignore = _ignores()
    for name, text in (("params.yaml", params_yaml(detected, data_ref, not inside, model, weights)),
                       ("dvc.yaml", workspace_dvc_yaml()), (".gitignore", gitignore), (".dvcignore", dvcignore)):
        if name in (".gitignore", ".dvcignore") and (root / name).exists():
            text = _merge_lines((root / name).read_text(encoding="utf-8"), text)
        write_text_atomic(root / name, text)
        written.append(name)
    if not (root / ".dvc").is_dir():
        dvc("init", "-q", *({"none": ["--no-scm"], "git (sub-folder)": ["--subdir"]}.get(scm, [])), cwd=root)
    if not dvc("remote", "list", cwd=root).strip():
        dvc("remote", "add", "-d", "local", "dvcstore", cwd=root)
    write_resolved(root / "params.yaml", root / RESOLVED)  # dvc.yaml's values: DVC reads them from here on
    if inside:
        dvc("add", data_ref, cwd=root)
    return InitResult(root, detected, data_ref, inside, scm, written,
                      [f"cd {root}", "graft run      # validate, select, fine-tune, gate and export, through DVC",
                       "graft serve    # the champion over HTTP (POST /predict, /docs)"])


def _merge_lines(old: str, new: str) -> str:
    have = set(old.splitlines())
    extra = [line for line in new.splitlines() if line not in have]
    return old + ("" if old.endswith("\n") or not old else "\n") + "\n".join(extra) + ("\n" if extra else "")
