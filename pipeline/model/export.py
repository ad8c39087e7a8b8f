"""export: the trained model as ONNX, checked against PyTorch with onnxruntime.

Two outputs, `logits` and `embedding` (the pooled representation drift monitoring reads), a
dynamic batch axis (and sequence axis for text). Parity on the real test split (max |logit
difference|, top-1 agreement) fails the export past `export.max_abs_diff` or below 100%
agreement. Latency p50/p95 at batch 1 and 32 for PyTorch eager and onnxruntime, measured in the
same run, each runtime within a time budget. The int8 model (pipeline.model.quantize) is
judged on the same test split and shipped only when it keeps the model's accuracy and is faster.
"""

from __future__ import annotations

import json
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from pipeline.core.artifacts import EXPORT_REPORT, MANIFEST, MODEL, Workspace
from pipeline.core.config import save_resolved
from pipeline.core.errors import GraftError
from pipeline.core.io import write_atomic, write_json_atomic
from pipeline.core.params import ExportParams, Params
from pipeline.modalities.registry import get_modality
from pipeline.model.backbone import TwoOutputs
from pipeline.model.backbones import Backbone, Classifier
from pipeline.model.loaders import make_loader
from pipeline.model.quantize import INT8, judge, quantize, settle
from pipeline.model.trained import encode_labels, trained_and_test
from pipeline.production.reference import build_reference, reference_rows
from pipeline.production.runtime import feeds, input_names, ort_session


class ExportParityError(GraftError):
    """onnxruntime disagrees with PyTorch beyond the configured bounds."""


@dataclass(frozen=True)
class Parity:
    examples: int
    max_abs_diff_logits: float
    max_abs_diff_embedding: float
    top1_agreement: float
    accuracy_torch: float
    accuracy_onnx: float
    max_abs_logit: float = 0.0  # the scale the logit difference is judged against


@dataclass(frozen=True)
class ExportResult:
    onnx_path: Path
    provider: str
    parity: Parity
    latency_ms: dict[str, dict[str, float]]
    int8: dict[str, Any] = field(default_factory=dict)
    passed: bool = True
    reasons: list[str] = field(default_factory=list)
    reference_rows: dict[str, int] = field(default_factory=dict)  # the drift reference's rows per split

    def to_dict(self) -> dict[str, Any]:
        return {"onnx": str(self.onnx_path), "provider": self.provider, "parity": asdict(self.parity),
                "latency_ms": self.latency_ms, "int8": self.int8, "passed": self.passed, "reasons": self.reasons,
                "reference_rows": self.reference_rows}


def _rename_value(model: Any, old: str, new: str) -> None:
    g = model.graph
    for node in g.node:
        node.input[:] = [new if v == old else v for v in node.input]
        node.output[:] = [new if v == old else v for v in node.output]
    for v in [*g.input, *g.output, *g.value_info, *g.initializer]:
        if v.name == old:
            v.name = new


def export_onnx(clf: Classifier, modality: str, example: tuple[torch.Tensor, ...], path: Path,
                metadata: dict[str, Any], opset: int = 18) -> Path:
    """torch.onnx (dynamo) export with a dynamic batch axis, then metadata; written atomically."""
    import onnx

    kind = get_modality(modality)
    wrapper, dynamic = kind.export_module(clf)
    tmp = path.with_suffix(".raw.onnx")
    path.parent.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        # a temporary output name: the exporter may already call an inner value "embedding"
        torch.onnx.export(wrapper, example, str(tmp), input_names=input_names(modality),
                          output_names=["logits", "graft_embedding_output"], dynamic_shapes=dynamic,
                          opset_version=opset, external_data=False, verbose=False)
    model = onnx.load(str(tmp))
    tmp.unlink()
    _rename_value(model, "embedding", "embedding_inner")
    _rename_value(model, "graft_embedding_output", "embedding")
    # The exporter's intermediate shape annotations trip int8 quantisation's strict shape
    # inference ("384 vs 2" on MiniLM); onnxruntime infers shapes itself.
    del model.graph.value_info[:]
    for key, value in metadata.items():
        entry = model.metadata_props.add()
        entry.key, entry.value = f"graft.{key}", json.dumps(value)
    onnx.checker.check_model(model)
    return write_atomic(path, lambda p: onnx.save(model, str(p)))


@torch.inference_mode()
def check_parity(clf: Classifier, session: Any, modality: str, loader: Any) -> Parity:
    wrapper = TwoOutputs(clf).eval()
    d_logit = d_emb = scale = 0.0
    agree = correct_t = correct_o = n = 0
    for inputs, y in loader:
        t_logits, t_emb = wrapper(*inputs)
        o_logits, o_emb = session.run(["logits", "embedding"], feeds(modality, inputs))
        d_logit = max(d_logit, float(np.abs(o_logits - t_logits.numpy()).max()))
        scale = max(scale, float(np.abs(t_logits.numpy()).max()))
        d_emb = max(d_emb, float(np.abs(o_emb - t_emb.numpy()).max()))
        pt, po = t_logits.argmax(1).numpy(), o_logits.argmax(1)
        agree += int((pt == po).sum())
        correct_t += int((pt == y.numpy()).sum())
        correct_o += int((po == y.numpy()).sum())
        n += len(y)
    return Parity(n, d_logit, d_emb, agree / max(n, 1), correct_t / max(n, 1), correct_o / max(n, 1), scale)


def _timings(fn: Callable[[], Any], runs: int, seconds: float) -> dict[str, float]:
    """Milliseconds per call after warm-up: at most `runs` timed calls within `seconds` (at least 3)."""
    for _ in range(2):
        fn()
    times: list[float] = []
    deadline = time.perf_counter() + seconds
    while len(times) < runs and (len(times) < 3 or time.perf_counter() < deadline):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1000)
    q1, p50, q3 = np.percentile(times, [25, 50, 75])
    return {"p50": float(p50), "p95": float(np.percentile(times, 95)), "iqr": float(q3 - q1), "runs": len(times)}


def measure_latency(clf: Classifier, sessions: dict[str, Any], modality: str, frame: pd.DataFrame,
                    view: Backbone, root: Path, ep: ExportParams) -> dict[str, dict[str, float]]:
    """p50/p95/IQR ms at batch 1 and 32 on real test inputs, PyTorch eager vs each onnxruntime
    session; each runtime gets export.latency_seconds, half per batch size."""
    out: dict[str, dict[str, float]] = {}
    rows = pd.concat([frame] * (32 // max(len(frame), 1) + 1)).head(32)
    budget = ep.latency_seconds / 2
    for bs in (1, 32):
        inputs, _ = next(iter(make_loader(view, rows.head(bs), [0] * bs, root, batch_size=bs)))
        ort_inputs = feeds(modality, inputs)
        with torch.inference_mode():
            out[f"torch_b{bs}"] = _timings(lambda i=inputs: clf(*i), ep.latency_runs, budget)
        for name, session in sessions.items():
            out[f"{name}_b{bs}"] = _timings(lambda s=session, f=ort_inputs: s.run(["logits"], f),
                                            ep.latency_runs, budget)
    return out


def _calibration(view: Backbone, manifest: pd.DataFrame, root: Path, size: int, seed: int
                 ) -> tuple[Iterator[dict[str, np.ndarray]], int]:
    """Batches of training-split inputs (eval transform) that calibrate static int8 ranges."""
    train = manifest[manifest["split"] == "train"]
    rows = train.sample(n=min(size, len(train)), random_state=seed)
    loader = make_loader(view, rows, [0] * len(rows), root, batch_size=16)
    return (feeds(view.modality, inputs) for inputs, _ in loader), len(rows)


def run_export(params: Params, ws: Workspace) -> ExportResult:
    """Stage entry: export, check parity and latency; write model/ (model.onnx, model.int8.onnx,
    preprocess.json, tokenizer/, the drift reference) and export.json."""
    ep, out = params.export, ws.export
    model_out = out / MODEL
    clf, info, view, test = trained_and_test(ws.train, ws.validate)
    labels = info["labels"]
    targets = encode_labels(test["label"], labels, "the test split").tolist()
    loader = make_loader(view, test, targets, ws.data, batch_size=32)
    example = next(iter(loader))[0]
    kind = get_modality(info["modality"])
    meta = {"labels": labels, "modality": info["modality"], "preprocess": info["preprocess"],
            "model": info["name"], "strategy": info["strategy"], "inputs": input_names(info["modality"])}
    onnx_path = export_onnx(clf, info["modality"], example, model_out / "model.onnx", meta, ep.opset)
    session, provider = ort_session(onnx_path)
    parity = check_parity(clf, session, info["modality"], loader)
    sessions = {"onnx": session}
    manifest = pd.read_parquet(ws.validate / MANIFEST)
    q_parity, method, n_calib = None, "", 0
    if ep.quantize:
        calib, n_calib = (_calibration(view, manifest, ws.data, ep.calibration_size, params.prepare.seed)
                          if kind.static_int8 else (None, 0))
        method = quantize(onnx_path, model_out / INT8, calib)
        sessions["onnx_int8"], _ = ort_session(model_out / INT8)
        q_parity = check_parity(clf, sessions["onnx_int8"], info["modality"], loader)
    latency = measure_latency(clf, sessions, info["modality"], test, view, ws.data, ep)
    int8: dict[str, Any] = {}
    if q_parity is not None:
        speedup = latency["onnx_b1"]["p50"] / latency["onnx_int8_b1"]["p50"]
        report = judge(ep, method, model_out / INT8, parity.accuracy_onnx, q_parity.accuracy_onnx,
                       q_parity.top1_agreement, speedup, n_calib)
        del sessions["onnx_int8"]
        settle(report, model_out)
        int8 = {**report.to_dict(), "parity": asdict(q_parity)}
    reasons = []
    # float32 rounding grows with the logits' size: the bound is relative beyond |logit| 1
    bound = ep.max_abs_diff * max(1.0, parity.max_abs_logit)
    if parity.max_abs_diff_logits > bound:
        reasons.append(f"max |logit difference| {parity.max_abs_diff_logits:.2e} > export.max_abs_diff={ep.max_abs_diff:g}"
                       f" x max(1, largest |logit| {parity.max_abs_logit:.3g})")
    if parity.top1_agreement < 1.0:
        reasons.append(f"top-1 agreement {parity.top1_agreement:.2%} < 100%")
    write_json_atomic(model_out / "preprocess.json", meta)
    kind.export_files(ws.train / MODEL, model_out)
    held: dict[str, int] = {}
    if not reasons:  # the drift reference: held-out data as this model sees it, kept with the version
        held = reference_rows(build_reference(model_out, manifest, ws.data, ep.reference_size,
                                              seed=params.prepare.seed))
    result = ExportResult(onnx_path, provider, parity, latency, int8, not reasons, reasons, held)
    write_json_atomic(out / EXPORT_REPORT, {**result.to_dict(), "size_mb": onnx_path.stat().st_size / 2**20})
    save_resolved(params, out, "export")
    if reasons:
        raise ExportParityError("ONNX export does not match PyTorch: " + "; ".join(reasons) +
                                f" (report: {out / EXPORT_REPORT})")
    return result
