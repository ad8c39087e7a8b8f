"""7. Drift false alarms and detection on real data it never saw, per modality.

30% of each real dataset (by content hash) is held back from everything; `graft run` with
defaults trains on the rest (select.strategy is linear_probe unless --strategy says otherwise:
fine-tuning MiniLM on 4,000 texts takes tens of minutes on 2 cores). Windows of held-back examples with no shift must not be called
drift; windows with real shifts that cost the model more than 5 accuracy points must be.

Shifts: text - another dataset's texts mixed in at 10/30/100% (TREC questions into SMS and
back: the model cannot be right on them) and accented vowels (a language-like vocabulary
shift); images - darkening to 40%, a blur of radius 3, a 90 degree rotation, and 30% synthetic
shapes (another source's pictures); audio (fsdd, trained on three speakers) - the fourth speaker,
white noise at 10 dB SNR, the telephone band (300-3,400 Hz). Each window's accuracy is measured on its labels.

Baseline: the rule before this change, on the same windows: a reference sampled from every
split (training rows included), Evidently's default per-column tests, drift when half the
columns drift or the embedding classifier's AUC passes 0.55 (up to 2,000 rows a side). graft:
the monitor's own drift_report and drift_decision on the champion's held-out reference.
Goal per modality: at most 1 false alarm in 20 healthy windows, and at least 95% of the
windows that lose more than 5 accuracy points detected.

    .venv/bin/python -m bench.drift_alarms [--windows 20] [--datasets sms trec clothing fsdd]
"""

from __future__ import annotations

import argparse
import hashlib
import os
import random
import shutil
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml
from PIL import Image, ImageEnhance, ImageFilter

from bench.common import MINILM, MOBILENET, SHARED, SMS, record
from pipeline.core.params import MonitorParams
from pipeline.modalities.registry import get_modality
from pipeline.production.monitor import drift_decision, drift_tests
from pipeline.production.predictor import Predictor
from pipeline.production.reference import load_reference

TREC = SHARED / "data" / "trec_qc" / "trec_qc.csv"
CLOTHING = SHARED / "data" / "clothing_small"
FSDD = SHARED / "data" / "fsdd"
WHISPER = SHARED / "weights" / "whisper-tiny.en"
HOLD_BACK = 0.3
DROP = 0.05  # windows losing more accuracy than this must be detected
OLD_EMBEDDING_AUC, OLD_SHARE, OLD_SAMPLE, OLD_REFERENCE = 0.55, 0.5, 2000, 2000


def held_back(key: str) -> bool:
    return int(hashlib.sha256(f"bench-holdout:{key}".encode()).hexdigest()[:8], 16) / 16**8 < HOLD_BACK


def _sms() -> pd.DataFrame:
    rows = [line.split("\t", 1) for line in SMS.read_text(encoding="utf-8").splitlines() if "\t" in line]
    return pd.DataFrame({"text": [t for _, t in rows], "label": [lbl for lbl, _ in rows]})


def _trec() -> pd.DataFrame:
    return pd.read_csv(TREC)[["text", "label"]]


# ---------------------------------------------------------------- train on the 70%, predict the rest


def _train(work: Path, params: dict[str, Any]) -> Predictor:
    from flows.steps import run_pipeline
    from pipeline.release.registry import champion_dir

    (work / "params.yaml").write_text(yaml.safe_dump(params))
    cwd = Path.cwd()
    os.chdir(work)
    try:
        run_pipeline("params.yaml", say=lambda _m: None)
        name, model_dir = champion_dir("registry")
        return Predictor(work / model_dir, name)
    finally:
        os.chdir(cwd)


def _class_folders(files: list[Path], data: Path) -> None:
    """The files kept for training, copied into class folders named as their own."""
    for p in files:
        (data / p.parent.name).mkdir(parents=True, exist_ok=True)
        shutil.copyfile(p, data / p.parent.name / p.name)


def trained_on_texts(name: str, frame: pd.DataFrame, strategy: str) -> tuple[Path, Predictor, pd.DataFrame]:
    """A champion trained (`graft run`, MiniLM) on the kept 70% of a text dataset; its workspace
    and the held-back rows."""
    frame = frame.drop_duplicates("text").reset_index(drop=True)
    back = frame["text"].map(held_back)
    work = Path(tempfile.mkdtemp(prefix=f"graft-bench-{name}-"))
    (work / "data").mkdir()
    frame[~back].to_csv(work / "data" / "train.csv", index=False)
    predictor = _train(work, {"data": {"path": "data/train.csv"},
                              "select": {"candidates": [{"name": MINILM[0], "weights": MINILM[1]}],
                                         "strategy": strategy},
                              "paths": {"cache": str(work / "cache")}})
    return work, predictor, frame[back].reset_index(drop=True)


def trained_on_images(name: str, strategy: str) -> tuple[Path, Predictor, list[Path]]:
    """A champion trained (`graft run`, MobileNetV2) on the kept 70% of clothing_small; its
    workspace and the held-back image files."""
    files = sorted(p for p in CLOTHING.glob("*/*.jpg"))
    back = [held_back(p.relative_to(CLOTHING).as_posix()) for p in files]
    work = Path(tempfile.mkdtemp(prefix=f"graft-bench-{name}-"))
    _class_folders([p for p, b in zip(files, back, strict=True) if not b], work / "data")
    predictor = _train(work, {"data": {"path": "data"},
                              "select": {"candidates": [{"name": "mobilenetv2_100", "weights": str(MOBILENET)}],
                                         "strategy": strategy},
                              "paths": {"cache": str(work / "cache")}})
    return work, predictor, [p for p, b in zip(files, back, strict=True) if b]


def _records(predictor: Predictor, inputs: list[Any], correct: list[bool] | np.ndarray, labels: list[str]) -> pd.DataFrame:
    out = []
    for start in range(0, len(inputs), 64):
        preds = predictor.predict(inputs[start:start + 64])
        out += predictor.records(preds)
    frame = pd.DataFrame(out)
    frame["correct"] = np.asarray(correct, dtype=bool) & (frame["pred"].to_numpy() == np.asarray(labels))
    return frame


# ---------------------------------------------------------------- the two rules


def _old_rule(reference: pd.DataFrame, window: pd.DataFrame, features: tuple[str, ...], seed: int) -> bool:
    """The rule before: Evidently's default test per column (what DataDriftPreset picks with no
    method: KS / chi-square p < 0.05 up to 1,000 rows, Wasserstein / Jensen-Shannon beyond), drift
    when half the columns drift, or the classifier AUC > 0.55 on up to 2,000 rows a side."""
    from evidently.legacy.calculations.stattests.registry import get_stattest
    from evidently.legacy.core import ColumnType
    from evidently.legacy.metrics.data_drift.embedding_drift_methods import model

    kinds = {**{c: ColumnType.Numerical for c in [*features, "confidence"]}, "pred": ColumnType.Categorical}
    drifted = 0
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore")
        for col, kind in kinds.items():
            ref, cur = reference[col].reset_index(drop=True), window[col].reset_index(drop=True)
            test = get_stattest(ref, cur, kind, None)
            drifted += bool(test(ref, cur, kind, None).drifted)
        rng = np.random.default_rng(seed)

        def emb(f: pd.DataFrame) -> pd.DataFrame:
            if len(f) > OLD_SAMPLE:
                f = f.iloc[np.sort(rng.choice(len(f), OLD_SAMPLE, replace=False))]
            return pd.DataFrame(np.stack(f["embedding"].to_numpy()))

        score, _, _ = model(threshold=OLD_EMBEDDING_AUC)(emb(window), emb(reference))
    return drifted / len(kinds) >= OLD_SHARE or score > OLD_EMBEDDING_AUC


def _new_rule(reference: pd.DataFrame, window: pd.DataFrame, features: tuple[str, ...],
              mp: MonitorParams) -> tuple[bool, list[str]]:
    per_col, emb, rule = drift_tests(reference, window.reset_index(drop=True), features, mp)
    drift, _ = drift_decision(per_col, emb, rule)
    fired = [c for c, r in per_col.items() if r["drifted"]]
    return drift, fired + ["embedding"] * emb["drifted"] + ["novelty"] * emb["novelty"]["drifted"]


# ---------------------------------------------------------------- windows


def _evaluate(name: str, modality: str, new_ref: pd.DataFrame, old_ref: pd.DataFrame, clean: pd.DataFrame,
              shifted: dict[str, pd.DataFrame], size: int, windows: int) -> dict[str, Any]:
    features = get_modality(modality).feature_names
    mp = MonitorParams()
    rng = np.random.default_rng(0)
    base_acc = None
    rows: list[dict[str, Any]] = []
    column_alarms: dict[str, int] = {}
    for kind, pool in [("clean", clean), *shifted.items()]:
        for w in range(windows):
            idx = rng.choice(len(pool), min(size, len(pool)), replace=False)
            window = pool.iloc[np.sort(idx)].reset_index(drop=True)
            new, fired = _new_rule(new_ref, window, features, mp)
            old = _old_rule(old_ref, window, features, seed=w)
            if kind == "clean":
                for c in fired:
                    column_alarms[c] = column_alarms.get(c, 0) + 1
            rows.append({"kind": kind, "accuracy": float(window["correct"].mean()), "new": new, "old": old,
                         "fired": fired})
        if kind == "clean":
            base_acc = float(np.mean([r["accuracy"] for r in rows]))
        print(f"  {name} {kind}: new {sum(r['new'] for r in rows if r['kind'] == kind)}/{windows}, "
              f"old {sum(r['old'] for r in rows if r['kind'] == kind)}/{windows}, accuracy "
              f"{np.mean([r['accuracy'] for r in rows if r['kind'] == kind]):.3f}", flush=True)
    clean_rows = [r for r in rows if r["kind"] == "clean"]
    must = [r for r in rows if r["kind"] != "clean" and base_acc - r["accuracy"] > DROP]
    by_kind = {k: {"windows": windows, "mean_accuracy": round(float(np.mean([r["accuracy"] for r in rows
                                                                            if r["kind"] == k])), 4),
                   "new_detected": sum(r["new"] for r in rows if r["kind"] == k),
                   "old_detected": sum(r["old"] for r in rows if r["kind"] == k)} for k in ["clean", *shifted]}
    return {"dataset": name, "modality": modality, "window_size": size, "clean_accuracy": round(base_acc, 4),
            "reference_rows_new": len(new_ref), "reference_rows_old": len(old_ref),
            "false_alarms_new": sum(r["new"] for r in clean_rows), "false_alarms_old": sum(r["old"] for r in clean_rows),
            "clean_windows": len(clean_rows), "clean_alarms_by_test": column_alarms,
            "must_detect": len(must), "detected_new": sum(r["new"] for r in must),
            "detected_old": sum(r["old"] for r in must), "by_kind": by_kind}


def _old_reference(predictor: Predictor, work: Path, inputs: Any, seed: int = 0) -> pd.DataFrame:
    """What export profiled before: up to 2,000 examples of every split, training rows included."""
    manifest = pd.read_parquet(work / "outputs" / "validate" / "manifest.parquet")
    rows = manifest.sample(n=min(OLD_REFERENCE, len(manifest)), random_state=seed).reset_index(drop=True)
    return _records(predictor, inputs(rows), [True] * len(rows), rows["label"].tolist())


def _accents(text: str) -> str:
    return text.translate(str.maketrans("aeiouAEIOU", "áéíóúÁÉÍÓÚ"))


def text_dataset(name: str, frame: pd.DataFrame, other: pd.DataFrame, windows: int, strategy: str,
                 size: int = 300) -> dict:
    work, predictor, pool = trained_on_texts(f"alarms-{name}", frame, strategy)
    texts, labels = pool["text"].tolist(), pool["label"].tolist()
    clean = _records(predictor, texts, [True] * len(pool), labels)
    foreign_texts = other["text"].drop_duplicates().sample(n=len(pool), random_state=1, replace=len(other) < len(pool))
    foreign = _records(predictor, foreign_texts.tolist(), [False] * len(pool), labels)
    shifted = {f"other dataset {int(p * 100)}%": _mix(clean, foreign, p) for p in (0.1, 0.3, 1.0)}
    shifted["accented vowels"] = _records(predictor, [_accents(t) for t in texts], [True] * len(pool), labels)
    old_ref = _old_reference(predictor, work, lambda rows: rows["text"].astype(str).tolist())
    new_ref = load_reference(predictor.dir)
    return _evaluate(name, "text", new_ref, old_ref, clean, shifted, size, windows)


def _mix(clean: pd.DataFrame, foreign: pd.DataFrame, share: float) -> pd.DataFrame:
    """The clean pool with `share` of its rows (seeded) replaced by foreign ones."""
    rng = np.random.default_rng(int(share * 1000))
    swap = rng.random(len(clean)) < share
    return pd.concat([clean[~swap], foreign[swap]]).sort_index().reset_index(drop=True)


def image_dataset(windows: int, strategy: str, size: int = 100) -> dict:
    work, predictor, pool = trained_on_images("alarms-clothing", strategy)
    labels = [p.parent.name for p in pool]
    images = [Image.open(p).convert("RGB") for p in pool]
    ok = [True] * len(pool)
    clean = _records(predictor, images, ok, labels)
    shifted = {
        "darkened to 40%": _records(predictor, [ImageEnhance.Brightness(i).enhance(0.4) for i in images], ok, labels),
        "blur radius 3": _records(predictor, [i.filter(ImageFilter.GaussianBlur(3)) for i in images], ok, labels),
        "rotated 90 degrees": _records(predictor, [i.rotate(90, expand=True) for i in images], ok, labels)}
    from pipeline.data.demo import _shape_image

    rng = random.Random(0)
    shapes = [_shape_image(rng.choice(["circle", "square", "triangle"]), rng, 224) for _ in pool]
    shifted["synthetic shapes 30%"] = _mix(clean, _records(predictor, shapes, [False] * len(pool), labels), 0.3)
    old_ref = _old_reference(predictor, work, lambda rows: [Image.open(work / "data" / p).convert("RGB")
                                                            for p in rows["path"]])
    return _evaluate("clothing_small", "image", load_reference(predictor.dir), old_ref, clean, shifted, size, windows)


def _wav(wave: np.ndarray, rate: int) -> bytes:
    import io

    import soundfile as sf

    buf = io.BytesIO()
    sf.write(buf, np.clip(wave, -1, 1), rate, format="WAV", subtype="PCM_16")
    return buf.getvalue()


def _noisy(wave: np.ndarray, snr_db: float, seed: int) -> np.ndarray:
    power = float((wave.astype(np.float64) ** 2).mean()) + 1e-12
    noise = np.random.default_rng(seed).normal(0, np.sqrt(power / 10 ** (snr_db / 10)), len(wave))
    return (wave + noise).astype(np.float32)


def _telephone(wave: np.ndarray, rate: int) -> np.ndarray:
    """The telephone band: 300-3,400 Hz (an FFT band-pass)."""
    spectrum = np.fft.rfft(wave)
    freqs = np.fft.rfftfreq(len(wave), 1.0 / rate)
    spectrum[(freqs < 300) | (freqs > 3400)] = 0
    return np.fft.irfft(spectrum, len(wave)).astype(np.float32)


def audio_dataset(windows: int, strategy: str, size: int = 100) -> dict:
    """fsdd: graft trains on 70% of three speakers' clips; healthy windows are their held-back
    clips; shifts: the fourth speaker (nicolas, unseen), white noise at 10 dB SNR, the telephone band."""
    from pipeline.modalities.audio_io import read_audio

    files = sorted(FSDD.glob("*/*.wav"))
    unseen = [p for p in files if "_nicolas_" in p.name]
    known = [p for p in files if "_nicolas_" not in p.name]
    back = [held_back(p.relative_to(FSDD).as_posix()) for p in known]
    work = Path(tempfile.mkdtemp(prefix="graft-bench-alarms-fsdd-"))
    _class_folders([p for p, b in zip(known, back, strict=True) if not b], work / "data")
    predictor = _train(work, {"data": {"path": "data"},
                              "select": {"candidates": [{"name": "openai/whisper-tiny.en", "weights": str(WHISPER)}],
                                         "strategy": strategy},
                              "paths": {"cache": str(work / "cache")}})
    pool = [p for p, b in zip(known, back, strict=True) if b]
    labels = [p.parent.name for p in pool]
    waves = [read_audio(p, p.name) for p in pool]
    ok = [True] * len(pool)
    clean = _records(predictor, [p.read_bytes() for p in pool], ok, labels)
    shifted = {
        "unseen speaker": _records(predictor, [p.read_bytes() for p in unseen], [True] * len(unseen),
                                   [p.parent.name for p in unseen]),
        "noise at 10 dB SNR": _records(predictor, [_wav(_noisy(w, 10, i), r) for i, (w, r) in enumerate(waves)], ok,
                                       labels),
        "telephone band": _records(predictor, [_wav(_telephone(w, r), r) for w, r in waves], ok, labels)}
    old_ref = _old_reference(predictor, work, lambda rows: [(work / "data" / p).read_bytes() for p in rows["path"]])
    return _evaluate("fsdd", "audio", load_reference(predictor.dir), old_ref, clean, shifted, size, windows)


def run(windows: int = 20, datasets: tuple[str, ...] = ("sms", "trec", "clothing", "fsdd"),
        strategy: str = "linear_probe") -> list[dict]:
    start = time.perf_counter()
    results = []
    if "sms" in datasets:
        results.append(text_dataset("sms_spam", _sms(), _trec(), windows, strategy))
    if "trec" in datasets:
        results.append(text_dataset("trec_qc", _trec(), _sms(), windows, strategy))
    if "clothing" in datasets:
        results.append(image_dataset(windows, strategy))
    if "fsdd" in datasets:
        results.append(audio_dataset(windows, strategy))
    out = []
    for modality in ("text", "image", "audio"):
        rs = [r for r in results if r["modality"] == modality]
        if not rs:
            continue
        clean = sum(r["clean_windows"] for r in rs)
        fa_new, fa_old = (sum(r[k] for r in rs) / clean for k in ("false_alarms_new", "false_alarms_old"))
        must = sum(r["must_detect"] for r in rs)
        det_new = sum(r["detected_new"] for r in rs) / must if must else float("nan")
        det_old = sum(r["detected_old"] for r in rs) / must if must else float("nan")
        sizes = sorted({r["window_size"] for r in rs})
        out.append(record(
            f"drift_alarms_{modality}",
            f"7. Drift false alarms on healthy {modality} windows ({', '.join(r['dataset'] for r in rs)}; "
            f"{'/'.join(map(str, sizes))} records a window)",
            baseline="the rule before: reference from every split, Evidently default tests, half the columns "
                     f"or AUC > 0.55 (detects {det_old:.0%} of windows losing > 5 accuracy points)",
            ours=f"held-out reference, p-value tests at a stated 2% false-alarm rate (detects {det_new:.0%})",
            goal="false alarms <= 1 in 20, detection >= 95%", baseline_value=fa_old, ours_value=fa_new,
            unit="of healthy windows flagged", ratio=fa_old - fa_new, ratio_label="fewer false alarms (share)",
            goal_met=bool(fa_new <= 0.05 and must and det_new >= 0.95),
            details={"datasets": rs, "false_alarm_rate_new": fa_new, "false_alarm_rate_old": fa_old,
                     "windows_losing_over_5_points": must, "detection_new": det_new, "detection_old": det_old,
                     "strategy": strategy,
                     "seconds": round(time.perf_counter() - start, 1)}))
    return out


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--windows", type=int, default=20)
    ap.add_argument("--datasets", nargs="+", default=["sms", "trec", "clothing", "fsdd"],
                    choices=["sms", "trec", "clothing", "fsdd"])
    ap.add_argument("--strategy", default="linear_probe",
                    help="select.strategy for the trained models (auto fine-tunes: much slower on a CPU)")
    a = ap.parse_args()
    run(a.windows, tuple(a.datasets), a.strategy)
