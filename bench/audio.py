"""Audio across speakers: leave-one-speaker-out accuracy on ../shared/data/fsdd (2,000 spoken
digits, 4 speakers; train on 3, test on the 4th, mean of the 4 folds).

graft: the frozen Whisper tiny.en encoder as graft loads it (the window fitted to the training
clips, the mean over the frames that hold audio: pipeline/modalities) + graft's linear probe
(logistic regression, C chosen by inner CV). Baseline, in the same run: 40 MFCCs (mean and std
over the clip, from the same log-mel) + the same probe. Seconds per clip for the encoder on the
fitted window and on Whisper's 30 s padding (a sample of clips) are measured side by side.

graft with its defaults: `graft run` per fold (only the candidate named), test accuracy on the
held-out speaker, beside the frozen probe (about 15 minutes a fold on 2 cores).

    .venv/bin/python -m bench.audio [--probe-only]
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from scipy.fft import dct
from sklearn.linear_model import LogisticRegressionCV
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from bench.common import SHARED, record
from pipeline.modalities.audio_io import filters_for, log_mel, read_audio, resample
from pipeline.model.backbones import load_backbone
from pipeline.model.loaders import make_loader

FSDD = SHARED / "data" / "fsdd"
WHISPER = SHARED / "weights" / "whisper-tiny.en"


def _manifest() -> pd.DataFrame:
    import soundfile as sf

    rows = []
    for path in sorted(FSDD.glob("*/*.wav")):
        info = sf.info(str(path))
        rows.append({"path": path.relative_to(FSDD).as_posix(), "label": path.parent.name,
                     "speaker": path.stem.split("_")[1], "seconds": info.frames / info.samplerate,
                     "split": "train"})
    return pd.DataFrame(rows)


@torch.inference_mode()
def _embed(backbone, frame: pd.DataFrame) -> tuple[np.ndarray, float]:
    loader = make_loader(backbone, frame, [0] * len(frame), FSDD, batch_size=32)
    start, out = time.perf_counter(), []
    for inputs, _ in loader:
        out.append(backbone.module(*inputs).numpy())
    return np.concatenate(out), (time.perf_counter() - start) / len(frame)


def _mfcc(frame: pd.DataFrame) -> np.ndarray:
    pre = {"features": "log_mel", "n_fft": 400, "hop_length": 160, "n_mels": 80, "sampling_rate": 16000}
    filters = filters_for(pre)
    out = []
    for rel in frame["path"]:
        wave, rate = read_audio(FSDD / rel, rel)
        wave = resample(wave, rate, 16000)
        wave = np.pad(wave, (0, max(0, 3200 - len(wave))))[: len(wave) // 160 * 160 + 160]
        c = dct(log_mel(wave, filters, 400, 160), axis=0, norm="ortho")[:40]
        out.append(np.concatenate([c.mean(1), c.std(1)]))
    return np.stack(out)


def _loso(x: np.ndarray, frame: pd.DataFrame) -> dict[str, float]:
    out = {}
    for speaker in sorted(frame["speaker"].unique()):
        test = (frame["speaker"] == speaker).to_numpy()
        probe = make_pipeline(StandardScaler(), LogisticRegressionCV(Cs=[0.01, 0.1, 1.0, 10.0], cv=3, max_iter=2000))
        probe.fit(x[~test], frame["label"][~test])
        out[speaker] = float((probe.predict(x[test]) == frame["label"][test]).mean())
    return out


def _graft_defaults(frame: pd.DataFrame, work: Path) -> dict[str, dict[str, float]]:
    """`graft run` with its defaults (only the candidate named) per fold: train/ holds the three
    speakers (val is carved from it by hash), test/ the fourth."""
    import json
    import os
    import shutil

    import yaml

    from flows.steps import run_pipeline

    out = {}
    for speaker in sorted(frame["speaker"].unique()):
        ws = work / f"fold-{speaker}"
        for rel, who in zip(frame["path"], frame["speaker"], strict=True):
            dst = ws / "data" / ("test" if who == speaker else "train") / rel
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(FSDD / rel, dst)
        (ws / "params.yaml").write_text(yaml.safe_dump({
            "data": {"path": "data"},
            "select": {"candidates": [{"name": "openai/whisper-tiny.en", "weights": str(WHISPER)}]},
            "paths": {"cache": str(work / "cache")}}))
        cwd, start = os.getcwd(), time.perf_counter()
        os.chdir(ws)
        try:
            summary = run_pipeline("params.yaml", say=lambda _m: None)
            strategy = summary.gate.strategy
        except Exception as exc:  # a rejected gate still leaves evaluate's metrics
            strategy = f"({type(exc).__name__})"
        finally:
            os.chdir(cwd)
        metrics = json.loads((ws / "outputs" / "evaluate" / "metrics.json").read_text())
        out[speaker] = {"accuracy": float(metrics["accuracy"]), "strategy": strategy,
                        "minutes": round((time.perf_counter() - start) / 60, 1)}
        print(f"  graft defaults, {speaker} held out: {out[speaker]}", flush=True)
    return out


def run(graft: bool = True) -> None:
    if not (FSDD.exists() and WHISPER.exists()):
        raise SystemExit(f"needs {FSDD} and {WHISPER}")
    torch.manual_seed(0)
    frame = _manifest()
    backbone = load_backbone("whisper-tiny.en", str(WHISPER), "audio", manifest=frame)
    feats, per_clip = _embed(backbone, frame)
    ours = _loso(feats, frame)
    base = _loso(_mfcc(frame), frame)
    sample = frame.groupby("speaker").head(8)
    padded = load_backbone("whisper-tiny.en", str(WHISPER), "audio", manifest=frame.assign(seconds=30.0))
    _, per_clip_30 = _embed(padded, sample)
    mean_ours, mean_base = float(np.mean(list(ours.values()))), float(np.mean(list(base.values())))
    record("audio_loso", "audio: leave-one-speaker-out accuracy on fsdd (frozen probe)",
           baseline="40 MFCC mean+std + logistic regression", ours="graft: frozen Whisper tiny.en, fitted window",
           goal=">= 0.98 mean (graft defaults)", baseline_value=mean_base, ours_value=mean_ours, unit="accuracy",
           ratio=mean_ours / max(mean_base, 1e-9), goal_met=mean_ours >= 0.98, ratio_label="x the baseline",
           details={"per_speaker": ours, "baseline_per_speaker": base,
                    "window_seconds": backbone.preprocess["window_seconds"],
                    "encoder_seconds_per_clip_fitted_window": per_clip,
                    "encoder_seconds_per_clip_30s_padding": per_clip_30,
                    "speedup_fitted_vs_30s": per_clip_30 / per_clip, "clips": len(frame)})
    if not graft:
        return
    import tempfile

    folds = _graft_defaults(frame, Path(tempfile.mkdtemp(prefix="graft-bench-audio-")))
    mean_graft = float(np.mean([f["accuracy"] for f in folds.values()]))
    beats = all(folds[s]["accuracy"] >= ours[s] for s in folds)
    record("audio_loso_graft", "audio: leave-one-speaker-out accuracy on fsdd, graft run with its defaults",
           baseline="frozen Whisper tiny.en + logistic regression (the probe above)",
           ours="graft run, defaults (select picks the strategy)", goal=">= 0.98 mean and >= the probe on every fold",
           baseline_value=mean_ours, ours_value=mean_graft, unit="accuracy", ratio=mean_graft - mean_ours,
           ratio_label="points over the probe (fraction)", goal_met=mean_graft >= 0.98 and beats,
           details={"folds": folds, "probe_per_speaker": ours})


if __name__ == "__main__":
    import sys

    run(graft="--probe-only" not in sys.argv)
