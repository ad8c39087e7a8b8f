"""A `graft init` workspace's generated values: params.yaml resolved against every default, and
the hash of the source each stage runs, in one file DVC reads (.graft/params.yaml).

params.yaml there holds only what differs from the defaults, so DVC cannot read a stage's
sections from it; and the pipeline's modules live in the installed package, not in the
workspace, so a stage cannot depend on their files. The workspace's dvc.yaml reads both from
.graft/params.yaml instead: `graft.<section>` and `graft.code.<stage>`, a hash of every module
the stage's entry point imports, so upgrading graft reruns the stages whose code changed.
`graft run` rewrites the file before `dvc repro`.
"""

from __future__ import annotations

import ast
import hashlib
import importlib.util
from functools import cache
from pathlib import Path

import yaml

from pipeline.core.config import load_params
from pipeline.core.io import write_text_atomic
from pipeline.stages import STAGES

RESOLVED = Path(".graft/params.yaml")
PACKAGES = ("pipeline", "flows", "graft")


@cache
def _package_root(package: str) -> Path | None:
    spec = importlib.util.find_spec(package)
    return Path(next(iter(spec.submodule_search_locations))).parent if spec and spec.submodule_search_locations else None


def module_file(name: str) -> Path | None:
    """The source file of a project module (pipeline.core.io), found without importing it."""
    root = _package_root(name.split(".")[0])
    if root is None:
        return None
    base = root / Path(*name.split("."))
    return next((c for c in (base.with_suffix(".py"), base / "__init__.py") if c.exists()), None)


def imported_names(path: Path) -> set[str]:
    """Every module named by an import anywhere in the file, inside functions too."""
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            out.add(node.module)
            out |= {f"{node.module}.{a.name}" for a in node.names}
    return out


def project_imports(path: Path) -> set[str]:
    """The project modules (files) a file imports; `from pkg import module` counts as the module."""
    names = {n for n in imported_names(path) if n.split(".")[0] in PACKAGES}
    return {n for n in names if (f := module_file(n)) is not None and f.name != "__init__.py"}


def closure(module: str) -> set[Path]:
    """The source files `module` runs: itself and every project module it imports, transitively."""
    seen: set[Path] = set()
    todo = [module]
    while todo:
        f = module_file(todo.pop())
        if f is None or f in seen:
            continue
        seen.add(f)
        todo += project_imports(f)
    return {f for f in seen if f.name != "__init__.py"}


def code_hash(stage_entry: str) -> str:
    """sha256 over the names and bytes of the files a stage's entry point runs."""
    digest = hashlib.sha256()
    for f in sorted(closure(stage_entry.split(":")[0])):
        digest.update(f"{f.parent.name}/{f.name}\0".encode())
        digest.update(f.read_bytes())
    return digest.hexdigest()[:16]


def write_resolved(params_file: str | Path = "params.yaml", target: str | Path = RESOLVED) -> Path:
    """params_file resolved against the defaults, plus each stage's code hash, for dvc.yaml.
    The file is rewritten only when a value changed (DVC compares values, not times)."""
    p = load_params(params_file)
    doc = {"graft": {**p.model_dump(by_alias=True, mode="json"),
                     "code": {s.name: code_hash(s.entry) for s in STAGES}}}
    text = ("# written by `graft run` from params.yaml and graft's defaults: edit params.yaml, not this file\n"
            + yaml.safe_dump(doc, sort_keys=False))
    target = Path(target)
    if not target.exists() or target.read_text(encoding="utf-8") != text:
        write_text_atomic(target, text)
    return target


def uses_resolved(dvc_yaml: str | Path = "dvc.yaml") -> bool:
    """Whether the workspace's dvc.yaml reads its values from .graft/params.yaml (a `graft init` one)."""
    path = Path(dvc_yaml)
    if not path.exists():
        return False
    doc = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    return str(RESOLVED) in [str(v) for v in doc.get("vars") or []]
