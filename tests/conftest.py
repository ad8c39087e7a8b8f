"""Fixtures that build small datasets on disk: image class folders and text tables."""

from __future__ import annotations

import os
import struct
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from pipeline.core.env import set_quiet_offline_defaults

set_quiet_offline_defaults()  # quiet and offline, as the CLI sets it

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"


def solid_image(path: Path, size: tuple[int, int] = (32, 32), mode: str = "RGB", seed: int = 0,
                fmt: str | None = None) -> Path:
    """A small image whose pixels depend on `seed`, so every seed hashes differently."""
    path.parent.mkdir(parents=True, exist_ok=True)
    colour = {"RGB": (seed % 256, (seed * 7) % 256, (seed * 13) % 256), "L": seed % 256,
              "CMYK": (seed % 256, 10, 20, 30), "I;16": seed * 97 % 65536}.get(mode, seed % 256)
    img = Image.new(mode, size, colour)
    img.putpixel((0, 0), (255, 255, 255) if mode == "RGB" else img.getpixel((0, 0)))
    img.save(path, format=fmt)
    return path


@pytest.fixture
def image_tree(tmp_path: Path) -> Callable[..., Path]:
    """image_tree(classes={'cat': 10, 'dog': 10}) -> root with root/<class>/<i>.png."""

    def make(classes: dict[str, int] | None = None, root: Path | None = None, start: int = 0) -> Path:
        root = root or tmp_path / "images"
        seed = start
        for label, n in (classes or {"cat": 12, "dog": 12}).items():
            (root / label).mkdir(parents=True, exist_ok=True)
            for _ in range(n):
                seed += 1
                solid_image(root / label / f"{label}_{seed:05d}.png", seed=seed)
        return root

    return make


@pytest.fixture
def text_csv(tmp_path: Path) -> Callable[..., Path]:
    """text_csv(rows=[(text, label), ...]) -> a CSV with a header text,label."""

    def make(rows: list[tuple[str, str]] | None = None, name: str = "data.csv") -> Path:
        import csv

        rows = rows if rows is not None else [(f"message number {i} about {lbl}", lbl)
                                              for lbl in ("ham", "spam") for i in range(20)]
        path = tmp_path / name
        with open(path, "w", newline="", encoding="utf-8") as fh:
            writer = csv.writer(fh)
            writer.writerow(["text", "label"])
            writer.writerows(rows)
        return path

    return make


def png_header_only(path: Path, width: int, height: int) -> Path:
    """A PNG that claims width x height but holds no pixels: a decompression bomb's header."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IEND", b""))
    return path


# ---------------------------------------------------------------- tiny "pretrained" models

TEXT_WORDS = ["free", "prize", "win", "cash", "claim", "call", "now", "urgent", "offer", "winner", "txt", "reply", "stop", "hello", "meeting", "lunch", "tomorrow", "see", "you", "later", "home", "love", "thanks", "ok", "sorry", "dinner"]


@pytest.fixture(scope="session")
def tiny_timm_dir(tmp_path_factory) -> Path:
    """timm's test_efficientnet saved as a local model folder with a 32-pixel input config."""
    import json

    import timm
    import torch
    from safetensors.torch import save_file

    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("tiny_timm")
    model = timm.create_model("test_efficientnet", pretrained=False, num_classes=10)
    # Like real pretrained weights, the BatchNorm running statistics match the activations.
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.momentum = None  # cumulative average
    model.train()
    with torch.no_grad():
        for _ in range(20):
            model(torch.rand(16, 3, 32, 32) * 2 - 1)
    save_file(model.state_dict(), str(folder / "model.safetensors"))
    (folder / "config.json").write_text(json.dumps({
        "architecture": "test_efficientnet", "num_classes": 10, "num_features": model.num_features,
        "pretrained_cfg": {"input_size": [3, 32, 32], "mean": [0.5] * 3, "std": [0.5] * 3, "crop_pct": 1.0,
                           "interpolation": "bilinear", "num_classes": 10, "classifier": "classifier",
                           "first_conv": "conv_stem"}}))
    return folder


@pytest.fixture(scope="session")
def tiny_vit_dir(tmp_path_factory) -> Path:
    import json

    import timm
    import torch
    from safetensors.torch import save_file

    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("tiny_vit")
    model = timm.create_model("test_vit", pretrained=False, num_classes=10, img_size=32, patch_size=8)
    save_file(model.state_dict(), str(folder / "model.safetensors"))
    (folder / "config.json").write_text(json.dumps({
        "architecture": "test_vit", "num_classes": 10, "num_features": model.num_features,
        "model_args": {"img_size": 32, "patch_size": 8},
        "pretrained_cfg": {"input_size": [3, 32, 32], "mean": [0.5] * 3, "std": [0.5] * 3, "crop_pct": 1.0,
                           "interpolation": "bilinear", "num_classes": 10, "classifier": "head"}}))
    return folder


@pytest.fixture(scope="session")
def tiny_bert_dir(tmp_path_factory) -> Path:
    """A 2-layer, 32-wide BERT with a word-level vocabulary, saved with save_pretrained."""
    import torch
    from transformers import BertConfig, BertModel, BertTokenizerFast

    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("tiny_bert")
    words = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *TEXT_WORDS]
    tok = BertTokenizerFast(vocab={w: i for i, w in enumerate(words)})
    assert "[UNK]" not in tok.tokenize(" ".join(TEXT_WORDS))
    cfg = BertConfig(vocab_size=5 + len(TEXT_WORDS), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                     intermediate_size=64, max_position_embeddings=64)
    BertModel(cfg).save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder


def colour_images(root: Path, per_class: int = 24) -> Path:
    """Two learnable classes: reddish and bluish noisy squares."""
    import random

    rng = random.Random(0)
    for label, base in (("red", (200, 40, 40)), ("blue", (40, 40, 200))):
        for i in range(per_class):
            img = Image.new("RGB", (32, 32), tuple(min(255, max(0, c + rng.randint(-40, 40))) for c in base))
            for _ in range(40):
                img.putpixel((rng.randrange(32), rng.randrange(32)), tuple(rng.randrange(256) for _ in range(3)))
            (root / label).mkdir(parents=True, exist_ok=True)
            img.save(root / label / f"{i:03d}.png")
    return root


def spam_rows(per_class: int = 40, seed: int = 0) -> list[tuple[str, str]]:
    """Two learnable classes of short messages over the tiny vocabulary; another seed draws new
    messages from the same distribution."""
    import random

    rng = random.Random(seed)
    spam, ham = TEXT_WORDS[:13], TEXT_WORDS[13:]
    return [(" ".join(rng.choices(words, k=rng.randint(4, 9))), label)
            for label, words in (("spam", spam), ("ham", ham)) for _ in range(per_class)]


def spam_texts(path: Path, per_class: int = 40) -> Path:
    return write_rows(path, spam_rows(per_class))


def write_rows(path: Path, rows: list[tuple[str, str]]) -> Path:
    """A CSV with a text,label header."""
    import csv

    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["text", "label"])
        writer.writerows(rows)
    return path


def tiny_task(tmp_path: Path, modality: str) -> tuple[Path, list[str], str]:
    """A learnable dataset and the tiny model name for it: (data path, labels, candidate name)."""
    if modality == "image":
        return colour_images(tmp_path / "imgs", per_class=30), ["blue", "red"], "test_efficientnet"
    return spam_texts(tmp_path / "t.csv", per_class=40), ["ham", "spam"], "tiny-bert"


# ---------------------------------------------------------------- a workspace with a champion

def text_params(data: str, bert: Path, cache: Path, **extra: dict) -> dict:
    """params for the tiny BERT text task, fast everywhere."""
    p = {"data": {"path": data}, "validate": {"labels": ["ham", "spam"]},
         "select": {"candidates": [{"name": "tiny-bert", "weights": str(bert)}], "cv_folds": 2,
                    "strategy": "linear_probe", "latency_runs": 3},
         "train": {"epochs": 1, "batch_size": 16, "max_length": 16},
         "export": {"latency_runs": 3, "quantize": False, "reference_size": 200},
         "serve": {"reload_seconds": 0.05},
         "monitor": {"min_records": 20, "cooldown_hours": 24.0},
         "gate": {"bounds": {"accuracy": None, "ece": None}},  # a 20-epoch probe is not calibrated
         "paths": {"cache": str(cache)}}
    for section, values in extra.items():
        p[section] = {**p.get(section, {}), **values}
    return p


@pytest.fixture(scope="session")
def champion_workspace(tmp_path_factory, tiny_bert_dir) -> Path:
    """A text workspace (data/t.csv, params.yaml) after one `graft run`: v0001 is the champion."""
    import yaml

    ws = tmp_path_factory.mktemp("workspace")
    spam_texts(ws / "data" / "t.csv", per_class=40)
    (ws / "params.yaml").write_text(yaml.safe_dump(text_params("data/t.csv", tiny_bert_dir, ws.parent / "ws-cache")))
    run_pipeline_in(ws)
    return ws


def run_pipeline_in(folder: Path) -> Any:
    """`graft run` in-process on `folder`'s params.yaml, from inside it; v0001 must become the champion."""
    from flows.steps import run_pipeline

    cwd = Path.cwd()
    os.chdir(folder)
    try:
        summary = run_pipeline(Path("params.yaml"), say=lambda _m: None)
    finally:
        os.chdir(cwd)
    assert summary.gate.champion == "v0001", summary
    return summary


@pytest.fixture
def workspace(champion_workspace, tmp_path, monkeypatch) -> Path:
    """A private copy of champion_workspace, as the working directory."""
    import shutil

    ws = tmp_path / "ws"
    shutil.copytree(champion_workspace, ws)
    monkeypatch.chdir(ws)
    return ws


def shifted_texts(n: int, seed: int = 0) -> list[str]:
    """Traffic the tiny model never saw: unknown words, other scripts, longer messages."""
    import random

    rng = random.Random(seed)
    words = ["größe", "facture", "envío", "über", "quantum", "blockchain", "naïve", "café", "déjà", "vu",
             "straße", "mañana", "résumé", "zürich", "smörgåsbord"]
    return [" ".join(rng.choices(words, k=rng.randint(12, 25))) for _ in range(n)]


# ---------------------------------------------------------------- object storage

@pytest.fixture(scope="session")
def s3_endpoint() -> Iterator[str]:
    """An S3-compatible server for the session (moto), with the AWS variables pointing at it."""
    from services import S3_ENV, s3_server

    saved = {k: os.environ.get(k) for k in [*S3_ENV, "AWS_ENDPOINT_URL"]}
    with s3_server() as url:
        os.environ.update(S3_ENV, AWS_ENDPOINT_URL=url)
        try:
            yield url
        finally:
            for k, v in saved.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v


@pytest.fixture
def s3_bucket(s3_endpoint, request) -> str:
    """A new, empty bucket: its s3:// URL."""
    import fsspec

    name = "graft-" + "".join(c if c.isalnum() else "-" for c in request.node.name.lower())[:40].strip("-")
    fs = fsspec.filesystem("s3")
    fs.invalidate_cache()
    if not fs.exists(name):
        fs.mkdir(name)
    return f"s3://{name}"
