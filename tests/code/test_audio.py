"""Audio through the modality interface: decoding, features, checks, and the whole pipeline with a
tiny random Whisper (no hub, no ../shared)."""

import io
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from conftest import run_pipeline_in

from pipeline.core.inputs import InputRejected, TooLarge
from pipeline.core.params import DataParams, PrepareParams, ValidateParams
from pipeline.data.prepare import prepare_data
from pipeline.data.validate import validate_manifest
from pipeline.modalities.audio import window_seconds
from pipeline.modalities.audio_io import (
    audio_features,
    log_mel,
    mel_filters,
    model_input,
    read_audio,
)

sf = pytest.importorskip("soundfile")


def tone(freq: float, seconds: float, rate: int = 16000, seed: int = 0, level: float = 0.3) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * rate)) / rate
    return (level * np.sin(2 * np.pi * freq * t) + 0.01 * rng.normal(size=t.size)).astype(np.float32)


def tone_clips(root: Path, per_class: int = 16, rate: int = 8000) -> Path:
    """Two learnable classes: low and high tones of varying length, recorded at `rate`."""
    for label, freq in (("low", 300.0), ("high", 1800.0)):
        (root / label).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            wave = tone(freq * (1 + 0.02 * (i % 5)), 0.4 + 0.05 * (i % 8), rate, seed=i)
            sf.write(root / label / f"{label}_{i}.wav", wave, rate)
    return root


@pytest.fixture(scope="session")
def tiny_whisper_dir(tmp_path_factory) -> Path:
    """A 1-layer, 16-wide Whisper with an 80-mel feature extractor, saved with save_pretrained."""
    import torch
    from transformers import WhisperConfig, WhisperFeatureExtractor, WhisperForConditionalGeneration

    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("tiny_whisper")
    cfg = WhisperConfig(vocab_size=64, d_model=16, encoder_layers=1, decoder_layers=1, encoder_attention_heads=2,
                        decoder_attention_heads=2, encoder_ffn_dim=32, decoder_ffn_dim=32, num_mel_bins=80,
                        max_source_positions=1500, max_target_positions=16, pad_token_id=0, bos_token_id=1,
                        eos_token_id=2, decoder_start_token_id=1)
    WhisperForConditionalGeneration(cfg).save_pretrained(folder)
    WhisperFeatureExtractor(feature_size=80).save_pretrained(folder)
    return folder


# ---------------------------------------------------------------- numpy features, no torch


def test_log_mel_equals_the_transformers_feature_extractor():
    from transformers import WhisperFeatureExtractor

    fe = WhisperFeatureExtractor(feature_size=80)
    assert np.abs(mel_filters(400, 80, 16000) - fe.mel_filters).max() < 1e-9
    wave = np.pad(tone(440.0, 0.7), (0, 16000 - 11200))
    theirs = fe(wave, sampling_rate=16000, return_tensors="np", padding="do_not_pad")["input_features"][0]
    ours = log_mel(wave, mel_filters(400, 80, 16000), 400, 160)
    assert ours.shape == theirs.shape == (80, 100)
    assert np.abs(ours - theirs).max() < 1e-4


def test_model_input_masks_the_frames_that_hold_audio():
    pre = {"features": "log_mel", "window_samples": 16000, "n_fft": 400, "hop_length": 160, "n_mels": 80,
           "sampling_rate": 16000}
    feats, mask = model_input(tone(440.0, 0.5), pre, mel_filters(400, 80, 16000))
    assert feats.shape == (80, 100) and mask.sum() == 50 and mask[:50].all()
    long_feats, long_mask = model_input(tone(440.0, 3.0), pre, mel_filters(400, 80, 16000))
    assert long_feats.shape == (80, 100) and long_mask.all()  # cut to the window
    wav_pre = {"features": "waveform", "window_samples": 8000, "normalize": True}
    x, m = model_input(tone(440.0, 0.25), wav_pre, None)
    assert x.shape == (8000,) and m.sum() == 4000 and abs(float(x[:4000].mean())) < 1e-3 and not x[4000:].any()


def _wav_bytes(wave: np.ndarray, rate: int, **kw) -> bytes:
    buf = io.BytesIO()
    sf.write(buf, wave, rate, format="WAV", **kw)
    return buf.getvalue()


def test_reading_mixes_down_and_refuses_what_is_not_audio(tmp_path):
    stereo = np.stack([tone(300, 0.5, 8000), -tone(300, 0.5, 8000)], axis=1) * 0 + 0.25
    wave, rate = read_audio(_wav_bytes(stereo, 8000), "stereo.wav")
    assert rate == 8000 and wave.ndim == 1 and np.allclose(wave, 0.25, atol=1e-4)
    good = _wav_bytes(tone(300, 2.0, 8000), 8000)
    with pytest.raises(TooLarge, match=r"long\.wav is 2\.0 s long, over the limit of 1 s"):
        read_audio(good, "long.wav", max_seconds=1.0)
    for name, data in {"text.wav": b"hello, not audio at all" * 10, "truncated.wav": good[:30],
                       "empty.wav": _wav_bytes(np.zeros(0, np.float32), 8000)}.items():
        with pytest.raises(InputRejected, match=name.replace(".", r"\.")):
            read_audio(data, name)


def test_summary_features_tell_loud_from_quiet_and_low_from_high():
    low, high = audio_features(tone(200, 1.0), 16000), audio_features(tone(3000, 1.0, level=0.01), 16000)
    assert low["duration"] == pytest.approx(1.0) and low["sample_rate"] == 16000
    assert low["spectral_centroid"] < 400 < 2500 < high["spectral_centroid"]
    assert low["loudness"] > high["loudness"] + 20
    silent = audio_features(np.concatenate([tone(200, 0.5), np.zeros(8000, np.float32)]), 16000)
    assert silent["silence_share"] == pytest.approx(0.5, abs=0.05)


def test_window_fits_the_training_clips():
    m = pd.DataFrame({"split": ["train"] * 100 + ["test"], "seconds": [0.6] * 97 + [1.7] * 3 + [40.0]})
    assert window_seconds(m) == 2.0
    assert window_seconds(m.assign(seconds=0.2)) == 1.0 and window_seconds(m.assign(seconds=45.0)) == 30.0


# ---------------------------------------------------------------- prepare and validate


def test_bad_clips_are_quarantined_with_their_reason_and_the_rest_goes_on(tmp_path):
    root = tone_clips(tmp_path / "clips", per_class=8)
    (root / "low" / "notes.wav").write_text("this is a text file named .wav")
    (root / "low" / "cut.wav").write_bytes((root / "low" / "low_0.wav").read_bytes()[:20])
    sf.write(root / "high" / "clipped.wav", np.sign(tone(1800, 0.5, 8000)), 8000)
    sf.write(root / "high" / "silent.wav", np.zeros(4000, np.float32), 8000)
    sf.write(root / "high" / "blip.flac", tone(1800, 0.01, 8000), 8000)
    result = prepare_data(root, DataParams(path=str(root)), PrepareParams(workers=1,
                          split={"train": 0.5, "val": 0.25, "test": 0.25}))
    assert result.modality == "audio" and result.classes == ["high", "low"]
    v = ValidateParams(labels=["high", "low"], min_per_class={"train": 1, "val": 0, "test": 0}, max_bad_fraction=0.5)
    report = validate_manifest(result.manifest, v, result.classes, str(root), workers=1)
    why = dict(zip(report.quarantine["path"], report.quarantine["reason"], strict=True))
    assert set(why) == {"low/notes.wav", "low/cut.wav", "high/clipped.wav", "high/silent.wav", "high/blip.flac"}
    assert "not readable audio" in why["low/notes.wav"] and "not readable audio" in why["low/cut.wav"]
    assert "clipped" in why["high/clipped.wav"] and "silence" in why["high/silent.wav"]
    assert "0.01 s long" in why["high/blip.flac"]
    assert len(report.accepted) == 16 and report.accepted["seconds"].between(0.3, 1.0).all()


# ---------------------------------------------------------------- the whole pipeline


@pytest.fixture(scope="module")
def audio_workspace(tmp_path_factory, tiny_whisper_dir) -> Path:
    ws = tmp_path_factory.mktemp("audio_ws")
    tone_clips(ws / "data" / "clips", per_class=60)
    params = {"data": {"path": "data/clips"}, "validate": {"labels": ["high", "low"]},
              "select": {"candidates": [{"name": "tiny-whisper", "weights": str(tiny_whisper_dir)}], "cv_folds": 2,
                         "strategy": "linear_probe", "latency_runs": 3},
              "train": {"epochs": 1, "batch_size": 8},
              "export": {"latency_runs": 3, "reference_size": 200},
              "evaluate": {"slices": ["duration_bucket"]},
              "serve": {"reload_seconds": 0.05, "max_audio_seconds": 5.0},
              "monitor": {"min_records": 10},
              "gate": {"bounds": {"macro_f1": {"min": 0.7}, "ece": {"max": 0.5}}},
              "paths": {"cache": str(ws / "cache")}}
    (ws / "params.yaml").write_text(yaml.safe_dump(params))
    summary = run_pipeline_in(ws)
    assert summary.gate.test_metrics["macro_f1"] >= 0.9, summary.gate.test_metrics
    return ws


def test_audio_runs_end_to_end_and_is_served_scored_and_monitored(audio_workspace, monkeypatch, tmp_path):
    from fastapi.testclient import TestClient

    from graft.serve import create_app
    from pipeline.core.config import load_params
    from pipeline.production.monitor import run_monitor
    from pipeline.production.predictor import Predictor
    from pipeline.production.prodlog import ProductionLog, read_log
    from pipeline.production.score import score
    from pipeline.release.registry import champion_dir

    monkeypatch.chdir(audio_workspace)
    p = load_params("params.yaml")
    name, model_dir = champion_dir(p.paths.registry)
    meta = json.loads((model_dir / "preprocess.json").read_text())
    assert meta["modality"] == "audio" and meta["inputs"] == ["input_features", "attention_mask"]
    assert meta["preprocess"]["window_seconds"] == 1.0  # fitted to the clips, not Whisper's 30 s
    card = (audio_workspace / "registry" / "versions" / name / "card.md").read_text()
    assert "tiny-whisper from …/" in card and "- Data: `data/clips`" in card
    assert str(audio_workspace.parent) not in card  # no machine path in a card
    log = ProductionLog(p.paths.log, flush_records=1)
    with TestClient(create_app(p, log)) as client:
        files = [("files", ("a.wav", _wav_bytes(tone(300, 0.6, 8000), 8000), "audio/wav")),
                 ("files", ("b.flac", _wav_bytes(tone(1800, 0.5, 22050), 22050, ), "audio/flac"))]
        r = client.post("/predict", files=files)
        assert r.status_code == 200, r.text
        assert [x["label"] for x in r.json()["predictions"]] == ["low", "high"]
        bad = client.post("/predict", files=[("files", ("x.wav", b"not audio" * 50, "audio/wav"))])
        assert bad.status_code == 422 and "files[0] (x.wav)" in bad.json()["detail"]
        assert "object at 0x" not in bad.json()["detail"] and "BytesIO" not in bad.json()["detail"]
        long = client.post("/predict", files=[("files", ("l.wav", _wav_bytes(tone(300, 6.0, 8000), 8000), "audio/wav"))])
        assert long.status_code == 413 and "limit of 5 s" in long.json()["detail"]
        assert client.post("/predict", json={"text": "hi"}).status_code == 415
    log.close()
    logged = read_log(p.paths.log)
    assert {"duration", "loudness", "silence_share", "spectral_centroid", "sample_rate"} <= set(logged)
    assert sorted(logged["sample_rate"]) == [8000.0, 22050.0]
    incoming = tone_clips(tmp_path / "incoming", per_class=20)
    (incoming / "low" / "junk.wav").write_text("junk")
    plog = ProductionLog(p.paths.log, flush_records=1)
    result = score(Predictor(model_dir, name), incoming, tmp_path / "preds.csv", plog)
    plog.close()
    assert result.scored == 40 and [Path(s).name for s, _ in result.skipped] == ["junk.wav"]
    preds = pd.read_csv(tmp_path / "preds.csv")
    assert (preds["pred"] == preds["input"].str.split("/").str[0]).mean() >= 0.9
    drift = run_monitor(p, p.paths.monitor)
    assert drift.decision in ("drift", "no_drift") and drift.current_records == 42


def test_label_queue_writes_an_audio_labelling_config(audio_workspace, monkeypatch):
    from pipeline.core.config import load_params
    from pipeline.production.label_queue import run_label_queue
    from pipeline.production.predictor import Predictor
    from pipeline.production.prodlog import ProductionLog, input_identity
    from pipeline.release.registry import champion_dir

    monkeypatch.chdir(audio_workspace)
    p = load_params("params.yaml")
    name, model_dir = champion_dir(p.paths.registry)
    pred, log = Predictor(model_dir, name), ProductionLog(p.paths.log, flush_records=1)
    rng = np.random.default_rng(1)
    clips = [_wav_bytes((rng.normal(size=8000) * 0.1 * (i + 1) + tone(900 + 300 * i, 1.0, 8000)).clip(-0.9, 0.9),
                        8000) for i in range(6)]  # noise and tones it never saw
    log.append(pred.records(pred.predict(clips), [f"new{i}.wav" for i in range(6)],
                            [input_identity(c, ".wav", log, True) for c in clips]))
    log.close()
    result = run_label_queue(p, 3)
    config = (audio_workspace / "data" / "inbox" / "to-label" / "label_config.xml").read_text()
    assert '<Audio name="audio" value="$audio"/>' in config and 'value="high"' in config
    assert len(result.picked) >= 1 and result.picked["audio"].str.startswith("audio/").all()


def test_a_new_batch_of_clips_is_ingested_and_a_bad_clip_set_aside(audio_workspace, monkeypatch):
    """The retraining loop's input: a labelled batch of clips in the inbox is validated alone and
    merged into the class folders; its one broken file is quarantined, the rest goes on."""
    from pipeline.core.config import load_params
    from pipeline.data.ingest import ingest_batch

    monkeypatch.chdir(audio_workspace)
    p = load_params("params.yaml")
    batch = audio_workspace / p.paths.inbox / "batch-0001"
    for label, freq in (("low", 350.0), ("high", 2100.0)):
        (batch / label).mkdir(parents=True)
        for i in range(4):
            sf.write(batch / label / f"new_{label}_{i}.flac", tone(freq, 0.7, 16000, seed=100 + i), 16000)
    (batch / "high" / "broken.wav").write_bytes(b"RIFF\x00\x00")
    before = len(list((audio_workspace / "data" / "clips").rglob("*.*")))
    result = ingest_batch(p, batch)
    assert result.accepted and result.merged == 8 and result.quarantined == 1, result.to_dict()
    assert len(list((audio_workspace / "data" / "clips").rglob("*.*"))) == before + 8
    assert (audio_workspace / "data" / "clips" / "high" / "new_high_0.flac").exists()


@pytest.fixture(scope="module")
def tiny_wav2vec2_dir(tmp_path_factory) -> Path:
    """A 1-layer, 16-wide wav2vec 2.0 with its feature extractor (raw 16 kHz waveform, normalised)."""
    import torch
    from transformers import Wav2Vec2Config, Wav2Vec2FeatureExtractor, Wav2Vec2Model

    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("tiny_wav2vec2")
    cfg = Wav2Vec2Config(hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32,
                         conv_dim=(16, 16), conv_stride=(5, 4), conv_kernel=(10, 8), num_conv_pos_embeddings=8,
                         num_conv_pos_embedding_groups=2, feat_extract_norm="layer", do_stable_layer_norm=True)
    Wav2Vec2Model(cfg).save_pretrained(folder)
    Wav2Vec2FeatureExtractor(feature_size=1, sampling_rate=16000, do_normalize=True,
                             return_attention_mask=True).save_pretrained(folder)
    return folder


def test_a_waveform_encoder_runs_the_pipeline_too(tmp_path, tiny_wav2vec2_dir, monkeypatch):
    """wav2vec 2.0 (and HuBERT, WavLM: the same path) through the same interface: raw samples and
    a sample mask in, the frames that hold audio pooled, exported with parity, served."""
    from pipeline.production.predictor import Predictor
    from pipeline.release.registry import champion_dir

    tone_clips(tmp_path / "data" / "clips", per_class=30)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump({
        "data": {"path": "data/clips"}, "validate": {"labels": ["high", "low"]},
        "select": {"candidates": [{"name": "tiny-wav2vec2", "weights": str(tiny_wav2vec2_dir)}], "cv_folds": 2,
                   "strategy": "linear_probe", "latency_runs": 3},
        "export": {"latency_runs": 3, "quantize": False, "reference_size": 50},
        "gate": {"bounds": {"ece": None}}, "paths": {"cache": str(tmp_path / "cache")}}))
    summary = run_pipeline_in(tmp_path)
    assert summary.gate.test_metrics["macro_f1"] >= 0.9, summary.gate.test_metrics
    monkeypatch.chdir(tmp_path)
    name, model_dir = champion_dir("registry")
    meta = json.loads((model_dir / "preprocess.json").read_text())
    assert meta["preprocess"]["features"] == "waveform" and meta["preprocess"]["window_samples"] == 16000
    pred = Predictor(model_dir, name)
    out = pred.predict([_wav_bytes(tone(300, 0.5, 8000), 8000), _wav_bytes(tone(1800, 0.6, 44100), 44100)])
    assert out.labels == ["low", "high"]


def test_an_audio_encoders_convolutional_front_end_is_its_bottom_layer_group(tiny_whisper_dir, tiny_wav2vec2_dir):
    """Fine-tuning's layer-wise learning rates: Whisper's conv1/conv2 and wav2vec2's feature encoder
    sit below layer 0 (smallest rate), not in the top group beside the final norm."""
    from pipeline.model.backbones import load_backbone

    for folder, front in ((tiny_whisper_dir, (".conv1.", ".conv2.")), (tiny_wav2vec2_dir, ("feature_extractor.",))):
        backbone = load_backbone("tiny", str(folder), "audio")
        groups = backbone.layer_groups()
        names = [n for n, _ in backbone.module.named_parameters()]
        assert sorted(n for g in groups for n in g) == sorted(names)
        assert {n for n in names if any(f in n for f in front)} <= set(groups[0])
        assert not any(f in n for f in front for n in groups[-1])
