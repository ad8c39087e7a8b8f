"""int8: quantise the exported model with onnxruntime, and ship it only when it keeps the model.

Convolutional (image) models get static QDQ quantisation: per-channel int8 weights, uint8
activations whose ranges are calibrated on batches of the training split (the test split stays
unseen); depthwise convolutions stay in float. Dynamic quantisation of a convolutional network, the only mode before, quantises the
weights alone and leaves every Conv's activations in float: on MobileNetV2 it lost 34 accuracy
points and ran slower than fp32. Transformers get dynamic per-channel quantisation (their
MatMuls quantise activations at run time; static ranges fit their outliers badly).

The int8 model is then judged on the test split against the fp32 ONNX model: more than
`export.int8_max_accuracy_drop` lost, fewer than `export.int8_min_agreement` top-1 predictions
shared, or less than `export.int8_min_speedup` at batch 1, and it is not shipped: the file is
removed and `quantization.json` beside the model says why (serving int8 then refuses with it).
"""

from __future__ import annotations

import contextlib
import json
import logging
import tempfile
import warnings
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from pipeline.core.errors import ModelNotFound
from pipeline.core.io import write_atomic, write_json_atomic
from pipeline.core.params import ExportParams

INT8 = "model.int8.onnx"
QUANTIZATION = "quantization.json"


class Int8NotShipped(ModelNotFound):
    """serve.model: int8 asked for a version whose int8 model was not shipped."""


@dataclass(frozen=True)
class Int8Report:
    shipped: bool
    method: str
    reasons: list[str]
    accuracy_fp32: float
    accuracy_int8: float
    top1_agreement: float
    speedup_b1: float
    size_mb: float
    calibration_examples: int = 0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class _Batches:
    """onnxruntime's CalibrationDataReader protocol over a loader's batches."""

    def __init__(self, batches: Iterator[dict[str, Any]]):
        self._it = batches

    def get_next(self) -> dict[str, Any] | None:
        return next(self._it, None)


def quantize(src: Path, dst: Path, calibration: Iterator[dict[str, Any]] | None) -> str:
    """Write the int8 model to `dst`: static with `calibration` batches (the modality's choice),
    else dynamic; returns the method used (for the report)."""
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_dynamic, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    with warnings.catch_warnings(), tempfile.TemporaryDirectory(prefix="graft-int8-") as tmp, _quiet_root():
        warnings.simplefilter("ignore")
        if calibration is not None:
            pre = Path(tmp) / "pre.onnx"  # shape inference + graph optimisation, as onnxruntime advises
            quant_pre_process(str(src), str(pre), skip_symbolic_shape=True)
            depthwise = _depthwise_convs(pre)
            write_atomic(dst, lambda p: quantize_static(
                str(pre), str(p), _Batches(calibration), quant_format=QuantFormat.QDQ, per_channel=True,
                activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8, nodes_to_exclude=depthwise,
                extra_options={"CalibMovingAverage": True}))
            return ("static QDQ: per-channel int8 weights, uint8 activations calibrated on the training split"
                    + (f"; {len(depthwise)} depthwise convolutions kept in fp32" if depthwise else ""))
        # per-channel weight scales: on SMS Spam (MiniLM + linear head) per-tensor int8 lost 3.3
        # accuracy points (95.8% top-1 agreement); per-channel 0.7 (99.1%).
        write_atomic(dst, lambda p: quantize_dynamic(str(src), str(p), weight_type=QuantType.QInt8,
                                                     per_channel=True))
        return "dynamic: per-channel int8 weights, activations quantised at run time"


@contextlib.contextmanager
def _quiet_root() -> Iterator[None]:
    """onnxruntime's quantiser logs advice through the root logger ("consider pre-processing"),
    which would land in every Prefect run log; its errors still raise."""
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        yield
    finally:
        root.setLevel(level)


def _depthwise_convs(path: Path) -> list[str]:
    """Depthwise convolutions (group > 1) stay in float: a handful of weights per channel and
    activation ranges that differ wildly between channels make them int8's weak point in
    MobileNet-style networks. On clothing photos (MobileNetV2) keeping them fp32 cut the
    accuracy lost from 2.6 to 0.6 points, at 1.8x instead of 2.2x the fp32 speed."""
    import onnx

    return [n.name for n in onnx.load(str(path)).graph.node
            if n.op_type == "Conv" and any(a.name == "group" and a.i > 1 for a in n.attribute)]


def judge(ep: ExportParams, method: str, path: Path, accuracy_fp32: float, accuracy_int8: float,
          agreement: float, speedup_b1: float, calibration_examples: int) -> Int8Report:
    """The shipping rule, applied to measured figures."""
    reasons = []
    drop = accuracy_fp32 - accuracy_int8
    if drop > ep.int8_max_accuracy_drop:
        reasons.append(f"accuracy {accuracy_int8:.4f} vs fp32 {accuracy_fp32:.4f}: {drop * 100:.1f} points lost "
                       f"> export.int8_max_accuracy_drop={ep.int8_max_accuracy_drop:g}")
    if agreement < ep.int8_min_agreement:
        reasons.append(f"top-1 agreement with fp32 {agreement:.2%} < export.int8_min_agreement="
                       f"{ep.int8_min_agreement:.0%}")
    if speedup_b1 < ep.int8_min_speedup:
        reasons.append(f"{speedup_b1:.2f}x the fp32 onnxruntime speed at batch 1 < export.int8_min_speedup="
                       f"{ep.int8_min_speedup:g}")
    return Int8Report(not reasons, method, reasons, accuracy_fp32, accuracy_int8, agreement, speedup_b1,
                      path.stat().st_size / 2**20 if path.exists() else 0.0, calibration_examples)


def settle(report: Int8Report, model_dir: Path) -> None:
    """Keep the int8 model only when shipped; record the decision beside the model either way."""
    if not report.shipped:
        (model_dir / INT8).unlink(missing_ok=True)
    write_json_atomic(model_dir / QUANTIZATION, report.to_dict())


def int8_path(model_dir: Path, name: str = "") -> Path:
    """The shipped int8 model of a model folder (version `name`), or Int8NotShipped naming why it is absent."""
    name = name or model_dir.name
    path = model_dir / INT8
    if path.exists():
        return path
    record = model_dir / QUANTIZATION
    if record.exists():
        report = json.loads(record.read_text(encoding="utf-8"))
        why = "; ".join(report.get("reasons", [])) or "unknown"
        raise Int8NotShipped(f"{name} has no int8 model: export did not ship it ({why}). "
                             "Serve it with serve.model: fp32")
    raise Int8NotShipped(f"{name} has no int8 model (export.quantize was off when it was exported); "
                         "serve it with serve.model: fp32, or export again with export.quantize: true")
