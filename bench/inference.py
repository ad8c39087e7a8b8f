"""3. Inference: onnxruntime vs. PyTorch eager at batch 1 and 32, for a small timm CNN
(MobileNetV2, ImageNet weights from ../shared) and for all-MiniLM-L6-v2; plus the dynamic int8
model's speed and its accuracy change on the SMS Spam Collection (a MiniLM linear probe
trained here on SMS, scored on SMS test messages).

Latency: graft's export.measure_latency (median of `runs` after warm-up, same inputs for
both runtimes, the same process). Goal: onnxruntime >= 1.5x at batch 1 on CPU; int8 >= 2.5x
with an accuracy drop of at most 1 point. (Published anchor: BERT-base on CPU, onnxruntime
1.8-2.2x over PyTorch.)

    .venv/bin/python -m bench.inference [--runs 30] [--sms-train 1500]
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import pandas as pd
import torch

from bench.common import MINILM, MOBILENET, REPO, SMS, record
from pipeline.core.config import parse_params
from pipeline.data.demo import make_image_demo
from pipeline.data.prepare import prepare_data
from pipeline.model.backbones import Classifier, load_backbone
from pipeline.model.export import _quantize, check_parity, export_onnx, measure_latency
from pipeline.model.features import embed_frame
from pipeline.model.loaders import make_loader
from pipeline.model.probe import fit_probe_head
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
    return measure_latency(clf, {"onnx": session}, "image", frame, backbone, root, runs)


def sms_frames(n_train: int) -> tuple[pd.DataFrame, pd.DataFrame, str]:
    p = parse_params({"data": {"format": "tsv", "header": False, "columns": ["label", "text"]}})
    m = prepare_data(SMS, p.data, p.prepare).manifest
    train = m[m["split"] == "train"].head(n_train).reset_index(drop=True)
    test = m[m["split"] == "test"].reset_index(drop=True)
    return train, test, "SMS Spam Collection"


def text_latency_and_int8(work: Path, runs: int, n_train: int) -> tuple[dict, dict]:
    tp = parse_params({"train": {"max_length": 64}}).train
    backbone = load_backbone(*MINILM, "text", max_length=tp.max_length)
    train, test, data = sms_frames(n_train)
    labels = sorted(train["label"].unique())
    ytr = train["label"].map(labels.index).to_numpy()
    yte = test["label"].map(labels.index).to_numpy()
    xtr = embed_frame(backbone, train, REPO, work / "cache")
    xte = embed_frame(backbone, test, REPO, work / "cache")
    head, *_ = fit_probe_head(xtr, ytr, xte[:200], yte[:200], len(labels), tp)
    clf = Classifier(backbone.module, backbone.dim, len(labels)).eval()
    clf.head.load_state_dict(head.state_dict())
    fp32 = _export(clf, backbone, test, REPO, work, "minilm")
    int8 = _quantize(fp32, work / "minilm.int8.onnx")
    sessions = {"onnx": ort_session(fp32)[0], "onnx_int8": ort_session(int8)[0]}
    latency = measure_latency(clf, sessions, "text", test, backbone, REPO, runs)
    loader = make_loader(backbone, test, yte.tolist(), REPO, batch_size=64)
    p32 = check_parity(clf, sessions["onnx"], "text", loader)
    p8 = check_parity(clf, sessions["onnx_int8"], "text", loader)
    quality = {"data": f"{data}: probe on {len(train)} train messages, {len(test)} test messages",
               "accuracy_torch": p32.accuracy_torch, "accuracy_onnx": p32.accuracy_onnx, "accuracy_int8": p8.accuracy_onnx,
               "int8_top1_agreement": p8.top1_agreement, "size_mb": {"fp32": fp32.stat().st_size / 2**20,
                                                                      "int8": int8.stat().st_size / 2**20}}
    return latency, quality


def run(runs: int = 30, sms_train: int = 1500) -> list[dict]:
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
    lat, q = text_latency_and_int8(work, runs, sms_train)
    drop = (q["accuracy_torch"] - q["accuracy_int8"]) * 100
    for bs in (1, 32):
        t, o, i8 = lat[f"torch_b{bs}"]["p50"], lat[f"onnx_b{bs}"]["p50"], lat[f"onnx_int8_b{bs}"]["p50"]
        out.append(record(f"inference_minilm_b{bs}", f"3. Inference, all-MiniLM-L6-v2, batch {bs}",
                          baseline="PyTorch eager", ours="onnxruntime (CPU)", goal=">= 1.5x at batch 1" if bs == 1 else "report",
                          baseline_value=t, ours_value=o, unit="ms p50", ratio=t / o,
                          goal_met=(t / o >= 1.5) if bs == 1 else None, details={"latency_ms": lat}))
        out.append(record(f"inference_minilm_int8_b{bs}", f"3. Inference, MiniLM int8 (dynamic), batch {bs}",
                          baseline="PyTorch eager", ours="onnxruntime int8", goal=">= 2.5x, accuracy drop <= 1 point",
                          baseline_value=t, ours_value=i8, unit="ms p50", ratio=t / i8,
                          goal_met=t / i8 >= 2.5 and drop <= 1.0,
                          details={**q, "accuracy_drop_points": drop, "latency_ms": lat}))
    return out


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=30)
    ap.add_argument("--sms-train", type=int, default=1500)
    a = ap.parse_args()
    run(a.runs, a.sms_train)
