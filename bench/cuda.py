"""8. The GPU: graft's CUDA paths against the same work on the CPU of the same machine.

- Serving: the exported ONNX model (MobileNetV2 from ../shared, all-MiniLM-L6-v2 on SMS Spam)
  through graft's session (`runtime.ort_session`: the CUDA provider on a GPU) vs. onnxruntime's
  CPU provider, p50 and p99 ms at batch 1 and 32 on the same inputs, after warm-up; parity of
  the two providers' logits (largest difference relative to the logits' scale, top-1 agreement).
- Training: graft's fine-tuning step (MobileNetV2 full, batch 32) on `train.device: cuda`
  (autocast, channels-last) vs. `train.device: cpu`, samples/s.

Without a GPU it says so and writes no result (no row in docs/benchmarks.md pretends to be one).

    .venv/bin/python -m bench.cuda [--runs 100]
"""

from __future__ import annotations

import argparse
import copy
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from bench.common import MINILM, MOBILENET, REPO, SMS, record
from bench.finetune import _loader, graft_steps
from pipeline.core.config import parse_params
from pipeline.data.demo import make_image_demo
from pipeline.data.prepare import prepare_data
from pipeline.model.backbones import Classifier, load_backbone
from pipeline.model.export import export_onnx
from pipeline.model.loaders import make_loader
from pipeline.production.runtime import cuda_device_count, feeds, ort_session


def _percentiles(fn, runs: int, warmup: int = 10) -> dict[str, float]:
    for _ in range(warmup):
        fn()
    ms = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        ms.append((time.perf_counter() - start) * 1000)
    return {"p50": float(np.percentile(ms, 50)), "p99": float(np.percentile(ms, 99)), "runs": runs}


def _model(work: Path, modality: str):
    if modality == "image":
        root, p = make_image_demo(work / "imgs", per_class=12), parse_params({})
        frame = prepare_data(root, p.data, p.prepare).manifest
        weights = str(MOBILENET) if MOBILENET.exists() else None
        backbone = load_backbone("mobilenetv2_100", weights, "image", pretrained=weights is not None)
        return backbone, frame, root, 3
    backbone = load_backbone(*MINILM, "text", max_length=64)
    data = parse_params({"data": {"format": "tsv", "header": False, "columns": ["label", "text"]}})
    frame = prepare_data(SMS, data.data, data.prepare).manifest
    return backbone, frame[frame["split"] == "test"].reset_index(drop=True), REPO, 2


def serving(work: Path, modality: str, runs: int) -> list[dict]:
    import onnxruntime as ort

    backbone, frame, root, n = _model(work, modality)
    clf = Classifier(backbone.module, backbone.dim, n).eval()
    torch.manual_seed(0)
    torch.nn.init.normal_(clf.head.weight, std=1 / backbone.dim**0.5)  # a trained head's scale, not zeros
    rows = frame.head(32)
    example = next(iter(make_loader(backbone, rows.head(2), [0, 0], root, batch_size=2)))[0]
    path = export_onnx(clf, modality, example, work / f"{modality}.onnx", {"labels": ["a"] * n})
    gpu, provider = ort_session(path)
    cpu = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    name = "MobileNetV2 224 px" if modality == "image" else "all-MiniLM-L6-v2"
    out = []
    for bs in (1, 32):
        f = feeds(modality, next(iter(make_loader(backbone, rows.head(bs), [0] * bs, root, batch_size=bs)))[0])
        (a, ea), (b, eb) = gpu.run(["logits", "embedding"], f), cpu.run(["logits", "embedding"], f)
        parity = {"max_abs_diff": float(np.abs(a - b).max()), "logit_scale": float(np.abs(b).max()),
                  "embedding_max_abs_diff": float(np.abs(ea - eb).max()),
                  "embedding_scale": float(np.abs(eb).max()),
                  "top1_agreement": float((a.argmax(1) == b.argmax(1)).mean())}
        g = _percentiles(lambda s=gpu, f=f: s.run(["logits"], f), runs)
        c = _percentiles(lambda s=cpu, f=f: s.run(["logits"], f), runs)
        out.append(record(f"cuda_serve_{modality}_b{bs}", f"8. Serving on the GPU, {name}, batch {bs}",
                          baseline="onnxruntime CPU provider", ours=f"graft's session ({provider})",
                          goal="report", baseline_value=c["p50"], ours_value=g["p50"], unit="ms p50",
                          ratio=c["p50"] / g["p50"], goal_met=None,
                          details={"gpu": g, "cpu": c, "parity": parity, "provider": provider}))
    return out


def training(work: Path, steps: int = 20, batch: int = 32) -> dict:
    backbone, frame, root, _n = _model(work, "image")
    labels = sorted(frame["label"].unique())
    batches = _loader(backbone, frame, frame["label"].map(labels.index).tolist(), root, batch, steps + 3)
    rate = {}
    for device in ("cpu", "cuda"):
        tp = parse_params({"train": {"batch_size": batch, "device": device}}).train
        clf = copy.deepcopy(Classifier(backbone.module, backbone.dim, len(labels))).to(device)
        if device == "cuda":
            clf = clf.to(memory_format=torch.channels_last)
        bb = copy.copy(backbone)
        bb.module = clf.backbone
        graft_steps(clf, bb, batches[:3], tp, torch.device(device), len(labels))  # warm-up (cuDNN autotune)
        rate[device] = steps * batch / graft_steps(clf, bb, batches[3:], tp, torch.device(device), len(labels))
    return record("cuda_finetune", f"8. Fine-tuning on the GPU, MobileNetV2 full, batch {batch}",
                  baseline="graft on train.device: cpu", ours="graft on train.device: cuda", goal="report",
                  baseline_value=rate["cpu"], ours_value=rate["cuda"], unit="samples/s",
                  ratio=rate["cuda"] / rate["cpu"], goal_met=None, details={"steps": steps, "batch": batch})


def run(runs: int = 100) -> list[dict]:
    if not (torch.cuda.is_available() and cuda_device_count()):
        print("bench.cuda: no GPU here (torch and the CUDA driver see none): nothing measured")
        return []
    work = Path(tempfile.mkdtemp(prefix="graft-bench-cuda-"))
    out = serving(work, "image", runs)
    if SMS.exists():
        out += serving(work, "text", runs)
    return [*out, training(work)]


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=100)
    run(ap.parse_args().runs)
