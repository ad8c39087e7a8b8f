"""Serving audio: `graft serve` (1 worker) answering 1 s spoken-digit clips over HTTP on loopback,
beside the bare onnxruntime session it wraps, run by as many threads on features computed
beforehand (the runtime's limit: no HTTP, multipart, decoding, resampling, log-mel or log).

The champion is the frozen Whisper tiny.en probe graft trains on 300 fsdd clips. Both sides are
closed loops of `--clients` callers for `--seconds`, measured one after the other in one run.

    .venv/bin/python -m bench.audio_serve [--seconds 20] [--clients 8]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import tempfile
import threading
import time
from pathlib import Path

import yaml

from bench.common import SHARED, record
from bench.serve_load import measure

FSDD = SHARED / "data" / "fsdd"
WHISPER = SHARED / "weights" / "whisper-tiny.en"


def _workspace(work: Path) -> Path:
    from flows.steps import run_pipeline

    ws = work / "audio"
    for i, p in enumerate(sorted(FSDD.glob("*/*.wav"))):
        if i % 6 == 0:  # ~330 clips of all four speakers
            (ws / "data" / p.parent.name).mkdir(parents=True, exist_ok=True)
            shutil.copyfile(p, ws / "data" / p.parent.name / p.name)
    params = {"data": {"path": "data"},
              "select": {"candidates": [{"name": "openai/whisper-tiny.en", "weights": str(WHISPER)}],
                         "strategy": "linear_probe", "latency_runs": 3},
              "export": {"quantize": False, "latency_runs": 3},
              "serve": {"flush_records": 1000, "flush_seconds": 3600}}
    (ws / "params.yaml").write_text(yaml.safe_dump(params))
    cwd = os.getcwd()
    os.chdir(ws)
    try:
        run_pipeline("params.yaml", say=lambda _m: None)
    finally:
        os.chdir(cwd)
    return ws


def _clips() -> list[Path]:
    """Twenty clips padded or cut to 1 s, as WAV files."""
    import numpy as np
    import soundfile as sf

    out = []
    folder = Path(tempfile.mkdtemp(prefix="graft-bench-clips-"))
    for i, p in enumerate(sorted(FSDD.glob("*/*_jackson_*.wav"))[::25][:20]):
        wave, rate = sf.read(p, dtype="float32")
        wave = np.pad(wave, (0, max(0, rate - len(wave))))[:rate]
        sf.write(folder / f"{i}.wav", wave, rate)
        out.append(folder / f"{i}.wav")
    return out


def _bodies(clips: list[Path]) -> list[tuple[bytes, str]]:
    out = []
    for i, clip in enumerate(clips):
        boundary = f"graftbench{i}"
        body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"files\"; filename=\"{i}.wav\"\r\n"
                f"Content-Type: audio/wav\r\n\r\n").encode() + clip.read_bytes() + f"\r\n--{boundary}--\r\n".encode()
        out.append((body, f"multipart/form-data; boundary={boundary}"))
    return out


def bare_session(ws: Path, clips: list[Path], clients: int, seconds: float) -> dict:
    """The champion's onnxruntime session alone, batch 1, `clients` threads, features precomputed."""
    from pipeline.production.predictor import Predictor
    from pipeline.release.registry import champion_dir

    name, model_dir = champion_dir(ws / "registry")
    pred = Predictor(ws / model_dir if not Path(model_dir).is_absolute() else model_dir, name)
    feeds = [pred.codec.feeds([pred.read(c.read_bytes(), c.name)[0]]) for c in clips]
    latencies: list[float] = []
    lock = threading.Lock()
    stop = time.monotonic() + seconds

    def caller(k: int) -> None:
        mine, i = [], k
        while time.monotonic() < stop:
            began = time.perf_counter()
            pred.session.run(["logits", "embedding"], feeds[i % len(feeds)])
            mine.append((time.perf_counter() - began) * 1000)
            i += clients
        with lock:
            latencies.extend(mine)

    for fd in feeds[:3]:
        pred.session.run(["logits"], fd)
    threads = [threading.Thread(target=caller, args=(k,)) for k in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    latencies.sort()
    return {"rps": len(latencies) / seconds, "p50_ms": statistics.median(latencies),
            "p99_ms": latencies[int(0.99 * (len(latencies) - 1))], "calls": len(latencies)}


def run(seconds: float = 20.0, clients: int = 8) -> dict:
    if not (FSDD.exists() and WHISPER.exists()):
        raise SystemExit(f"needs {FSDD} and {WHISPER}")
    work = Path(tempfile.mkdtemp(prefix="graft-bench-audio-serve-"))
    ws = _workspace(work)
    clips = _clips()
    served = measure(ws, "audio", 1, clients, seconds, bodies=_bodies(clips))
    bare = bare_session(ws, clips, clients, seconds)
    shutil.rmtree(work, ignore_errors=True)
    return record("audio_serve", f"audio serving: 1 s clips, Whisper tiny.en probe, {clients} clients on loopback",
                  baseline="the bare onnxruntime session, batch 1, features precomputed",
                  ours="graft serve, 1 worker (upload, decode, resample, log-mel, log)", goal="report",
                  baseline_value=bare["rps"], ours_value=served["rps"], unit="requests/s",
                  ratio=served["rps"] / bare["rps"], ratio_label="x the bare session", goal_met=None,
                  details={"served": served, "bare_session": bare,
                           "records_lost": served["answered_with_warmup"] - served["logged"]})


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=20.0)
    ap.add_argument("--clients", type=int, default=8)
    a = ap.parse_args()
    run(a.seconds, a.clients)
