"""10. Serving under load: `graft serve` with 1 worker (the baseline) vs 2 worker processes, on
loopback, for a text model (all-MiniLM-L6-v2) and an image model (MobileNetV2, ImageNet weights
from ../shared), each trained by graft on the demo data.

The load generator is bounded and closed-loop: `--clients` threads, each with its own keep-alive
connection, send one request after another for `--seconds`; every answer's latency is kept.
After the run the server gets SIGTERM; the production log must then hold exactly one record per
200 response (0 lost), whatever each worker process had buffered.

    .venv/bin/python -m bench.serve_load [--seconds 20] [--clients 8]
"""

from __future__ import annotations

import argparse
import http.client
import io
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import yaml

from bench.common import MINILM, MOBILENET, record
from graft.local_service import free_port, wait_until_up
from pipeline.data.demo import make_image_demo, make_text_demo, text_rows
from pipeline.production.prodlog import read_log


def _workspace(work: Path, modality: str) -> Path:
    """A workspace whose champion graft trained (linear probe) on the demo data."""
    from flows.steps import run_pipeline

    ws = work / modality
    ws.mkdir(parents=True)
    if modality == "text":
        data, labels = make_text_demo(ws / "data" / "tickets.csv"), ["billing", "delivery", "login"]
        cand = {"name": MINILM[0], "weights": MINILM[1]}
    else:
        data, labels = make_image_demo(ws / "data" / "images", per_class=40), ["circle", "square", "triangle"]
        cand = {"name": "mobilenetv2_100", **({"weights": str(MOBILENET)} if MOBILENET.exists() else {"pretrained": False})}
    params = {"data": {"path": str(data)}, "validate": {"labels": labels},
              "select": {"candidates": [cand], "strategy": "linear_probe", "latency_runs": 3},
              "train": {"max_length": 64}, "export": {"quantize": False, "latency_runs": 3},
              "gate": {"bounds": {"ece": {"max": 1.0}}}, "serve": {"flush_records": 1000, "flush_seconds": 3600}}
    (ws / "params.yaml").write_text(yaml.safe_dump(params))
    cwd = os.getcwd()
    os.chdir(ws)
    try:
        run_pipeline("params.yaml", say=lambda _m: None)
    finally:
        os.chdir(cwd)
    return ws


def _bodies(modality: str) -> list[tuple[bytes, str]]:
    if modality == "text":
        return [(json.dumps({"text": t}).encode(), "application/json") for t, _ in text_rows(20, seed=7)]
    from PIL import Image

    out = []
    for i in range(20):
        buf = io.BytesIO()
        Image.new("RGB", (96, 96), ((i * 37) % 256, (i * 91) % 256, 128)).save(buf, "PNG")
        boundary = f"graftbench{i}"
        body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"files\"; filename=\"{i}.png\"\r\n"
                f"Content-Type: image/png\r\n\r\n").encode() + buf.getvalue() + f"\r\n--{boundary}--\r\n".encode()
        out.append((body, f"multipart/form-data; boundary={boundary}"))
    return out


def _load(port: int, bodies: list[tuple[bytes, str]], clients: int, seconds: float) -> tuple[list[float], int]:
    """Closed-loop load: (latencies of 200 answers in ms, non-200 answers)."""
    latencies: list[float] = []
    errors = [0]
    lock = threading.Lock()
    stop = time.monotonic() + seconds

    def client(k: int) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        i = k
        mine: list[float] = []
        while time.monotonic() < stop:
            body, ctype = bodies[i % len(bodies)]
            i += clients
            began = time.perf_counter()
            conn.request("POST", "/predict", body, {"content-type": ctype})
            resp = conn.getresponse()
            resp.read()
            if resp.status == 200:
                mine.append((time.perf_counter() - began) * 1000)
            else:
                with lock:
                    errors[0] += 1
        conn.close()
        with lock:
            latencies.extend(mine)

    threads = [threading.Thread(target=client, args=(k,)) for k in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return latencies, errors[0]


def measure(ws: Path, modality: str, workers: int, clients: int, seconds: float,
            bodies: list[tuple[bytes, str]] | None = None) -> dict:
    """`graft serve --workers N` in `ws` under load: the modality's demo requests, or `bodies`."""
    shutil.rmtree(ws / "production", ignore_errors=True)
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "graft.cli", "serve", "--port", str(port), "--workers", str(workers)],
                            cwd=ws, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    try:
        wait_until_up(f"http://127.0.0.1:{port}/health", proc, 180, "graft serve did not start")
        bodies = bodies or _bodies(modality)
        warm, _ = _load(port, bodies, clients, 3.0)  # warm-up: every worker process loads and runs the model
        lat, errors = _load(port, bodies, clients, seconds)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=120)
    logged = len(read_log(ws / "production" / "log"))
    lat.sort()
    return {"workers": workers, "clients": clients, "seconds": seconds, "answered": len(lat), "errors": errors,
            "rps": len(lat) / seconds, "p50_ms": statistics.median(lat), "p99_ms": lat[int(0.99 * (len(lat) - 1))],
            "answered_with_warmup": len(warm) + len(lat), "logged": logged}


def run(seconds: float = 20.0, clients: int = 8) -> list[dict]:
    work = Path(tempfile.mkdtemp(prefix="graft-bench-serve-"))
    out = []
    for modality in ("text", "image"):
        ws = _workspace(work, modality)
        one, two = (measure(ws, modality, w, clients, seconds) for w in (1, 2))
        lost = {f"{r['workers']} workers": r["answered_with_warmup"] - r["logged"] for r in (one, two)}
        model = "all-MiniLM-L6-v2" if modality == "text" else "MobileNetV2"
        out.append(record(f"serve_load_{modality}", f"10. Serving under load, {model}, {clients} clients on loopback",
                          baseline="graft serve, 1 worker", ours="graft serve --workers 2", goal="report; 0 records lost",
                          baseline_value=one["rps"], ours_value=two["rps"], unit="requests/s",
                          ratio=two["rps"] / one["rps"], ratio_label="x throughput",
                          goal_met=all(v == 0 for v in lost.values()) and not one["errors"] and not two["errors"],
                          details={"one_worker": one, "two_workers": two, "records_lost": lost}))
    shutil.rmtree(work, ignore_errors=True)
    return out


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=20.0)
    ap.add_argument("--clients", type=int, default=8)
    a = ap.parse_args()
    run(a.seconds, a.clients)
