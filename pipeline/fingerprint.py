"""Stage fingerprints: which inputs each stage output was made from, checked before it is read.

DVC knows when an output is stale for its own runs; a user running `graft validate` by hand does
not go through DVC. So every stage run (CLI, flows, DVC's commands alike) writes
`fingerprint.json` beside its outputs: its params sections, the data path for prepare, and the
fingerprints of the outputs it read, hashed into one digest, and whether it succeeded. Before a
stage reads an upstream output it recomputes what that output's digest must be under the current
params and upstream outputs; a missing, failed or different one stops the run with the command
that makes it current. A failed `prepare` keeps its previous manifest (nothing stored is lost),
and its fingerprint says it failed, so `validate` cannot pass on the old data.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

from pipeline.core.artifacts import FINGERPRINT, Workspace
from pipeline.core.errors import GraftError
from pipeline.core.io import write_json_atomic
from pipeline.core.params import Params
from pipeline.stages import STAGE


class StaleInput(GraftError):
    """An upstream output is missing, failed, or was made from other inputs."""


def _sections(params: Params, names: tuple[str, ...]) -> dict[str, Any]:
    full = params.model_dump(by_alias=True, mode="json")
    out = {}
    for name in names:
        value: Any = full
        for part in name.split("."):
            value = value[part]
        out[name] = value
    return out


def _read(ws: Workspace, stage: str) -> dict[str, Any] | None:
    path = ws.folder(stage) / FINGERPRINT
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def inputs(stage: str, params: Params, ws: Workspace) -> dict[str, Any]:
    """What `stage`'s outputs depend on now: its params sections, the data (prepare) and the
    digests of the upstream outputs on disk."""
    s = STAGE[stage]
    found: dict[str, Any] = {"params": _sections(params, s.sections)}
    if not s.reads:
        found["data"] = os.path.abspath(ws.data)  # not resolve(): a symlink loop must not raise here
    for up in s.reads:
        fp = _read(ws, up)
        found[up] = fp.get("digest") if fp else None
    return found


def digest(found: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(found, sort_keys=True, default=str).encode()).hexdigest()[:16]


def check_upstream(stage: str, params: Params, ws: Workspace) -> None:
    """StaleInput naming the upstream output and the command, unless every one is current."""
    for up in STAGE[stage].reads:
        fp = _read(ws, up)
        folder = ws.folder(up)
        if fp is None:
            raise StaleInput(f"{folder} has no record of the run that made it ({FINGERPRINT}); run `graft {up}` "
                             f"first (or `graft run`)")
        if fp.get("status") != "ok":
            raise StaleInput(f"the last `graft {up}` failed ({fp.get('error', 'no reason recorded')}); its old "
                             f"outputs in {folder} are not used: fix that and run `graft {up}` again")
        expected = inputs(up, params, ws)
        if fp.get("digest") != digest(expected):
            recorded = fp.get("inputs", {})
            changed = sorted(k for k in {*expected, *recorded} if expected.get(k) != recorded.get(k))
            if "params" in changed:
                changed = [*_changed_params(expected["params"], recorded.get("params", {})),
                           *(c for c in changed if c != "params")]
            raise StaleInput(f"{folder} was made from other inputs ({', '.join(changed)} changed since); "
                             f"run `graft {up}` again (or `graft run`)")


def _changed_params(now: dict[str, Any], then: dict[str, Any]) -> list[str]:
    keys = []
    for section in sorted({*now, *then}):
        a, b = now.get(section), then.get(section)
        if isinstance(a, dict) and isinstance(b, dict):
            keys += [f"{section}.{k}" for k in sorted({*a, *b}) if a.get(k) != b.get(k)]
        elif a != b:
            keys.append(section)
    return keys


def record(stage: str, params: Params, ws: Workspace, error: BaseException | None = None) -> Path:
    """Write `stage`'s fingerprint: its inputs and digest, and whether it succeeded."""
    found = inputs(stage, params, ws)
    # a failed run's digest matches nothing: whatever read the old outputs is stale too
    entry: dict[str, Any] = {"stage": stage, "status": "ok" if error is None else "failed",
                             "digest": digest(found) if error is None else f"failed:{digest(found)}", "inputs": found}
    if error is not None:
        entry["error"] = f"{type(error).__name__}: {str(error).splitlines()[0][:300] if str(error) else ''}"
    return write_json_atomic(ws.folder(stage) / FINGERPRINT, entry)
