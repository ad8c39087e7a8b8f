"""Where every stage's outputs live, by name, and the one way to ask for a missing one.

A `Workspace` holds the folder of each stage (from `paths` in params.yaml, or the command
line's `--out`/input options, which dvc.yaml passes); the constants name the files inside.
`require(path, stage)` is the single "run `graft STAGE` first" error.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

from pipeline.core.errors import MissingInput
from pipeline.core.params import Params

SPLITS = ("train", "val", "test")
SPLIT_FOLDERS = {"train": "train", "val": "val", "valid": "val", "validation": "val", "dev": "val", "test": "test"}

MANIFEST = "manifest.parquet"          # prepare, validate
PREPARE_SUMMARY = "prepare.json"       # prepare
QUARANTINE = "quarantine.csv"          # validate
TO_LABEL = "to-label"  # the inbox folder `graft label-queue` writes to (not a batch)
VALIDATION = "validation.json"         # validate
VALIDATION_HTML = "report.html"        # validate
VALIDATION_METRICS = "summary.json"    # validate
LEADERBOARD = "leaderboard.json"       # select
LEADERBOARD_MD = "leaderboard.md"      # select
MODEL = "model"                        # train (PyTorch), export (ONNX): a folder
TRAIN_METRICS = "metrics.json"         # train
HISTORY = "history.json"               # train
CHECKPOINTS = "checkpoints"            # train
LIVE = "live"                          # train (dvclive)
EVAL_METRICS = "metrics.json"          # evaluate
EVALUATION = "evaluation.json"         # evaluate
PREDICTIONS = "predictions.parquet"    # evaluate
EXPORT_REPORT = "export.json"          # export
GATE_DECISION = "gate.json"            # gate
RUN_SUMMARY = "run-summary.json"       # gate
RESOLVED = "params.resolved.yaml"      # every stage
FINGERPRINT = "fingerprint.json"       # every stage another stage reads: the inputs it was made from


def require(path: str | Path, stage: str) -> Path:
    """`path`, which stage `stage` writes; a clear error naming the command when it is missing."""
    path = Path(path)
    if not path.exists():
        raise MissingInput(f"{path} does not exist; run `graft {stage}` first (or `graft run` for every stage)")
    return path


@dataclass(frozen=True)
class Workspace:
    """The raw data and each stage's output folder."""

    data: Path
    prepare: Path
    validate: Path
    select: Path
    train: Path
    evaluate: Path
    export: Path
    gate: Path
    params_file: Path | None = None

    @classmethod
    def from_params(cls, p: Params, params_file: str | Path | None = None, **overrides: str | Path | None) -> Workspace:
        """Folders from `paths`; any keyword (a stage name or `data`) that is not None replaces one."""
        pp = p.paths
        ws = cls(Path(p.data.path), Path(pp.prepare), Path(pp.validate_), Path(pp.select), Path(pp.train),
                 Path(pp.evaluate), Path(pp.export), Path(pp.gate), Path(params_file) if params_file else None)
        return replace(ws, **{k: Path(v) for k, v in overrides.items() if v is not None})

    def folder(self, stage: str) -> Path:
        return getattr(self, stage)
