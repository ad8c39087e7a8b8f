"""3. Inference: onnxruntime vs. PyTorch eager at batch 1 and 32, for a small timm CNN
(MobileNetV2, ImageNet weights from ../shared) and for all-MiniLM-L6-v2 (on SMS Spam texts).
The int8 rows are in bench.quality: they come from graft's own export on real datasets.

Latency: graft's export.measure_latency (median of at most `runs` within the time budget,
after warm-up, same inputs for both runtimes, the same process). Goal: onnxruntime >= 1.5x at
batch 1 on CPU. (Published anchor: BERT-base on CPU, onnxruntime 1.8-2.2x over PyTorch.)

    .venv/bin/python -m bench.inference [--runs 30]
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import torch

from bench.common import MINILM, MOBILENET, REPO, SMS, record
from pipeline.core.config import parse_params
from pipeline.data.demo import make_image_demo
from pipeline.data.prepare import prepare_data
from pipeline.model.backbones import Classifier, load_backbone
from pipeline.model.export import export_onnx, measure_latency
from pipeline.model.loaders import make_loader
from pipeline.production.runtime import ort_session


def _export(clf, backbone, frame, root, work, name):
    example = next(iter(make_loader(backbone, frame.head(2), [0, 0], root, batch_size=2)))[0]
    path = export_onnx(clf, backbone.modality, example, work / f"{name}.onnx", {"labels": ["a"]})
    return path


def image_latency(work: Path, runs: int) -> dict:
    p = parse_params({})
    root = make_image_demo(work / "imgs", per_class=12)
    frame = prepare_data(root, p.data, p.prepare).manifest
    weights = str(MOBILENET) if MOBILENET.exists() else None
    backbone = load_backbone("mobilenetv2_100", weights, "image", pretrained=weights is not None)
    clf = Classifier(backbone.module, backbone.dim, 3).eval()
    session, _ = ort_session(_export(clf, backbone, frame, root, work, "mobilenet"))
    return measure_latency(clf, {"onnx": session}, "image", frame, backbone, root,
                           parse_params({"export": {"latency_runs": runs}}).export)


def text_latency(work: Path, runs: int) -> dict:
    p = parse_params({"train": {"max_length": 64}, "export": {"latency_runs": runs}})
    backbone = load_backbone(*MINILM, "text", max_length=p.train.max_length)
    m = prepare_data(SMS, parse_params({"data": {"format": "tsv", "header": False, "columns": ["label", "text"]}}).data,
                     p.prepare).manifest
    test = m[m["split"] == "test"].reset_index(drop=True)
    clf = Classifier(backbone.module, backbone.dim, 2).eval()
    session, _ = ort_session(_export(clf, backbone, test, REPO, work, "minilm"))
    return measure_latency(clf, {"onnx": session}, "text", test, backbone, REPO, p.export)


def run(runs: int = 30) -> list[dict]:
    torch.manual_seed(0)
    work = Path(tempfile.mkdtemp(prefix="graft-bench-infer-"))
    img = image_latency(work, runs)
    out = []
    for bs in (1, 32):
        t, o = img[f"torch_b{bs}"]["p50"], img[f"onnx_b{bs}"]["p50"]
        out.append(record(f"inference_mobilenetv2_b{bs}", f"3. Inference, MobileNetV2 224 px, batch {bs}",
                          baseline="PyTorch eager", ours="onnxruntime (CPU)", goal=">= 1.5x at batch 1" if bs == 1 else "report",
                          baseline_value=t, ours_value=o, unit="ms p50", ratio=t / o,
                          goal_met=(t / o >= 1.5) if bs == 1 else None, details={"latency_ms": img}))
    if not SMS.exists():
        print(f"{SMS} not found: the MiniLM / int8 rows are skipped")
        return out
    lat = text_latency(work, runs)
    for bs in (1, 32):
        t, o = lat[f"torch_b{bs}"]["p50"], lat[f"onnx_b{bs}"]["p50"]
        out.append(record(f"inference_minilm_b{bs}", f"3. Inference, all-MiniLM-L6-v2, batch {bs}",
                          baseline="PyTorch eager", ours="onnxruntime (CPU)", goal=">= 1.5x at batch 1" if bs == 1 else "report",
                          baseline_value=t, ours_value=o, unit="ms p50", ratio=t / o,
                          goal_met=(t / o >= 1.5) if bs == 1 else None, details={"latency_ms": lat}))
    return out


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=30)
    a = ap.parse_args()
    run(a.runs)
