"""2. Candidate screening: `select` over 3 candidates on 1,000 images vs. one embedding pass of
the same 1,000 images through the same 3 candidates (each loaded the same way).

Screening = load + embed (cold cache) + 5-fold probe + batch-1 latency, per candidate. Goal: at
most 1.2x the embedding pass alone (the probe itself should be near free).

    .venv/bin/python -m bench.screening [--images 1500]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch

from bench.common import MOBILENET, record
from bench.make_images import make
from pipeline.core.config import parse_params
from pipeline.data.prepare import prepare_data
from pipeline.model.backbones import load_backbone
from pipeline.model.loaders import make_loader
from pipeline.model.select import select_candidate, stratified_sample

CANDIDATES = [{"name": "mobilenetv2_100", "weights": str(MOBILENET)},
              {"name": "mobilenetv2_100", "pretrained": False},
              {"name": "mobilenetv3_small_100", "pretrained": False}]


@torch.inference_mode()
def embedding_pass(cands: list[dict], sample, root: Path, batch_size: int) -> float:
    start = time.perf_counter()
    for c in cands:
        backbone = load_backbone(c["name"], c.get("weights"), "image", pretrained=c.get("pretrained", True))
        backbone.module.eval()
        for inputs, _ in make_loader(backbone, sample, [0] * len(sample), root, batch_size=batch_size):
            backbone.module(*inputs)
    return time.perf_counter() - start


def run(images: int = 1500, per_class: int = 100) -> dict:
    work = Path(tempfile.mkdtemp(prefix="graft-bench-screen-"))
    make(work / "imgs", images, classes=10)
    cands = [c for c in CANDIDATES if c.get("weights") is None or Path(c["weights"]).exists()]
    p = parse_params({"data": {"path": str(work / "imgs")}, "select": {"candidates": cands, "sample_per_class": per_class},
                      "paths": {"cache": str(work / "cache")}})
    manifest = prepare_data(work / "imgs", p.data, p.prepare).manifest
    labels = sorted(manifest["label"].unique())
    sample = stratified_sample(manifest[manifest["split"] == "train"], per_class, p.prepare.seed)
    base = embedding_pass(cands, sample, work / "imgs", p.select.batch_size)
    start = time.perf_counter()
    result = select_candidate(manifest, labels, work / "imgs", p)  # cold embedding cache
    ours = time.perf_counter() - start
    return record(
        "screening", f"2. Candidate screening, {len(cands)} candidates x {len(sample)} images",
        baseline=f"one embedding pass of the {len(sample)} images through the {len(cands)} candidates",
        ours="graft select (embed, 5-fold probe, latency)", goal="<= 1.2x the embedding pass",
        baseline_value=base, ours_value=ours, unit="s", ratio=ours / base, ratio_label="x the pass (lower is better)",
        goal_met=ours / base <= 1.2,
        details={"candidates": [s.name for s in result.scores],
                 "embed_seconds": {s.name: s.embed_seconds for s in result.scores},
                 "probe_macro_f1": {s.name: s.probe_macro_f1 for s in result.scores},
                 "examples": len(sample), "image_size": "128 px JPEG, model input 224"})


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=1500)
    run(ap.parse_args().images)
