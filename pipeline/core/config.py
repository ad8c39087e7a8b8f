"""Loading params.yaml: YAML in, validated `Params` out; saving what a stage used.

Each stage receives only its own section(s) and saves the resolved values next to its outputs.
"""

from __future__ import annotations

import difflib
import io
import re
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError
from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap, CommentedSeq

from pipeline.core.errors import ParamsError
from pipeline.core.io import write_text_atomic
from pipeline.core.params import Params, has_credentials


class _Loader(yaml.SafeLoader):
    """YAML 1.2 floats: `1e-4` is a number (PyYAML's YAML 1.1 reads it as a string)."""


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*)(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
    list("-+0123456789"),
)


def _known_keys(model: type[BaseModel]) -> list[str]:
    return [f.alias or name for name, f in model.model_fields.items()]


def _model_at(loc: tuple[Any, ...]) -> type[BaseModel] | None:
    model: type[BaseModel] = Params
    for part in loc:
        field = next(
            (f for n, f in model.model_fields.items() if part in (n, f.alias)), None
        )
        sub = field.annotation if field else None
        if not (isinstance(sub, type) and issubclass(sub, BaseModel)):
            return None
        model = sub
    return model


def _describe(err: dict[str, Any], source: str) -> str:
    loc = tuple(err["loc"])
    dotted = ".".join(str(p) for p in loc) or "(top level)"
    if err["type"] == "extra_forbidden":
        parent = _model_at(loc[:-1])
        known = _known_keys(parent) if parent else []
        hint = difflib.get_close_matches(str(loc[-1]), known, n=1)
        did_you_mean = f" Did you mean '{'.'.join([*map(str, loc[:-1]), hint[0]])}'?" if hint else ""
        return (
            f"{source}: unknown key '{dotted}'.{did_you_mean} "
            f"Known keys here: {', '.join(known)}."
        )
    got = err.get("input")
    got_text = "" if isinstance(got, dict) or has_credentials(got) else f" (got {got!r} of type {type(got).__name__})"
    msg = err["msg"].removeprefix("Value error, ")
    if err["type"] == "string_pattern_mismatch" and (parent := _model_at(loc[:-1])):
        field = parent.model_fields.get(str(loc[-1]))
        msg = f"expected {field.description}" if field and field.description else msg
    return f"{source}: {dotted}: {msg}{got_text}."


def parse_params(raw: dict[str, Any] | None, source: str = "params.yaml") -> Params:
    """Validate a params mapping; every problem is reported with its dotted key path."""
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ParamsError(f"{source}: the top level must be a mapping of sections, got {type(raw).__name__}.")
    try:
        return Params.model_validate(raw)
    except ValidationError as exc:
        lines = [_describe(e, source) for e in exc.errors()]
        raise ParamsError("\n".join(lines)) from None


def _read(path: Path) -> Any:
    """The params file's YAML; every way it can fail is a ParamsError naming the file and the fix."""
    if path.is_symlink() and not path.exists():
        raise ParamsError(f"params file {path} is a symbolic link to nothing (a loop, or its target is gone); "
                          "point --params at the YAML file itself")
    if not path.exists():
        raise ParamsError(f"params file {path} does not exist; create it (an empty file means every default), "
                          "or pass --params FILE")
    if path.is_dir():
        raise ParamsError(f"params file {path} is a folder; pass the YAML file inside it, e.g. --params {path}/params.yaml")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise ParamsError(f"{path}: not UTF-8 (byte 0x{exc.object[exc.start]:02x} at byte {exc.start}); "
                          "re-save it as UTF-8") from None
    except OSError as exc:
        raise ParamsError(f"{path}: cannot be read ({exc.strerror or exc}); check the path and its permissions") from None
    try:
        return yaml.load(text, Loader=_Loader) or {}
    except yaml.YAMLError as exc:
        raise ParamsError(f"{path}: not valid YAML: {exc}") from None


def load_params(path: str | Path = "params.yaml", overrides: list[str] | None = None) -> Params:
    """Read a params file and apply `key.path=value` overrides (values parsed as YAML)."""
    path = Path(path)
    raw = _read(path)
    for item in overrides or []:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ParamsError(f"--set {item!r}: expected KEY.PATH=VALUE, e.g. --set prepare.seed=1")
        if not isinstance(raw, dict):
            break  # parse_params says what is wrong with the file's top level
        node = raw
        parts = key.split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ParamsError(f"--set {item!r}: '{part}' is not a section")
        try:
            node[parts[-1]] = yaml.load(value, Loader=_Loader)
        except yaml.YAMLError as exc:
            raise ParamsError(f"--set {item!r}: the value is not valid YAML ({getattr(exc, 'problem', None) or exc}); "
                              "quote it, e.g. --set 'data.path=\"my file.csv\"'") from None
    return parse_params(raw, source=str(path))


def section_dict(params: Params, *names: str) -> dict[str, Any]:
    """The resolved values of the named sections, as plain data (aliases as in params.yaml)."""
    full = params.model_dump(by_alias=True, mode="json")
    return {name: full[name] for name in names}


def save_resolved(params: Params, out_dir: str | Path, *sections: str) -> Path:
    """Write the resolved sections a stage used next to its outputs, as params.resolved.yaml."""
    target = Path(out_dir) / "params.resolved.yaml"
    text = yaml.safe_dump(section_dict(params, *sections), sort_keys=False)
    write_text_atomic(target, text)
    return target


def freeze_labels(path: str | Path, labels: list[str]) -> None:
    """Write the inferred label set into params.yaml (validate.labels), keeping its comments."""
    path = Path(path)
    ry = YAML()
    ry.preserve_quotes = True
    ry.width = 4096  # keep the user's line breaks
    doc = ry.load(path.read_text(encoding="utf-8")) if path.exists() else None
    if doc is None:
        doc = CommentedMap()
    section = doc.setdefault("validate", CommentedMap())
    old = section.get("labels")
    if isinstance(old, CommentedSeq):
        old.clear()
        old.extend(labels)
        old.fa.set_flow_style()
    else:
        seq = CommentedSeq(labels)
        seq.fa.set_flow_style()
        section["labels"] = seq
    buf = io.StringIO()
    ry.dump(doc, buf)
    write_text_atomic(path, buf.getvalue())
