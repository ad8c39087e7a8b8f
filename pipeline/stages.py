"""The stage table: every stage's name, entry point, params sections and outputs, in run order.

One name per stage everywhere: the module's `run_<name>`, the dvc.yaml stage, the `graft <name>`
command and the Prefect task. dvc.yaml repeats the sections and outputs for DVC; a test holds
the two to each other. Entry points are named, not imported, so reading the table loads no
model code.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pipeline.core import artifacts as a


@dataclass(frozen=True)
class Stage:
    name: str
    entry: str  # "module:function", called as function(params, workspace, **options)
    help: str
    sections: tuple[str, ...]  # the params it reads (dvc.yaml `params`)
    reads: tuple[str, ...]  # the stages whose outputs it reads
    outs: tuple[str, ...] = ()  # in its folder; "" is the folder itself
    metrics: tuple[str, ...] = ()  # DVC metrics files (uncached)
    persist: tuple[str, ...] = ()  # uncached, kept across runs; DVC never restores such a stage from its run cache

    def load(self) -> Callable[..., Any]:
        module, function = self.entry.split(":")
        return getattr(importlib.import_module(module), function)


STAGES: tuple[Stage, ...] = (
    Stage("prepare", "pipeline.data.prepare:run_prepare",
          "Scan the raw data into a manifest (manifest.parquet, prepare.json).",
          ("data", "prepare"), (), outs=("",)),
    Stage("validate", "pipeline.data.validate:run_validate",
          "Run the Great Expectations suite; quarantine bad rows or stop with a report.",
          ("validate",), ("prepare",),
          outs=(a.MANIFEST, a.QUARANTINE, a.VALIDATION_HTML, a.VALIDATION, a.RESOLVED, a.FINGERPRINT),
          metrics=(a.VALIDATION_METRICS,)),
    Stage("select", "pipeline.model.select:run_select",
          "Score the candidates with a probe on frozen features; choose a model and a strategy.",
          # the full probe and the strategy rule read train's probe settings and its margin; the label audit its mode
          ("select", "train.max_length", "train.seed", "train.probe_c", "train.class_weighting", "train.min_gain",
           "validate.label_issues"),
          ("validate",), outs=("",)),
    Stage("train", "pipeline.model.train:run_train",
          "Fine-tune the selected model with the selected strategy.",
          ("train", "select.strategy", "evaluate.ece_bins", "validate.label_issues"), ("validate", "select"),
          outs=(a.MODEL, a.HISTORY, a.RESOLVED, a.FINGERPRINT), metrics=(a.TRAIN_METRICS,), persist=(a.CHECKPOINTS,)),
    Stage("evaluate", "pipeline.model.evaluate:run_evaluate",
          "Test-split metrics, calibration, slices, behavioural checks and plots.",
          ("evaluate",), ("validate", "train"),
          outs=(a.EVALUATION, a.PREDICTIONS, a.RESOLVED, a.FINGERPRINT), metrics=(a.EVAL_METRICS,)),
    Stage("export", "pipeline.model.export:run_export",
          "Export to ONNX (logits + embedding), check parity with onnxruntime, measure latency.",
          ("export",), ("validate", "train"), outs=(a.MODEL, a.RESOLVED, a.FINGERPRINT), metrics=(a.EXPORT_REPORT,)),
    # the gate writes the registry, which DVC does not see: a persistent output keeps DVC from
    # ever restoring its outputs from the run cache instead of running it
    Stage("gate", "pipeline.release.gate:run_gate",
          "Judge the challenger against the champion; register it, promote it when blessed.",
          ("gate",), ("validate", "train", "evaluate", "export"),
          metrics=(a.GATE_DECISION,), persist=(a.RUN_SUMMARY,)),
)

STAGE = {s.name: s for s in STAGES}
NAMES = tuple(STAGE)
