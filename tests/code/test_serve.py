"""graft serve: predictions, 4xx for bad requests, hot reload of a new champion, and a log that survives kill -9."""

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from conftest import colour_images
from fastapi.testclient import TestClient

from graft.local_service import free_port, wait_until_up
from graft.serve import create_app
from pipeline.core.config import load_params
from pipeline.production.prodlog import ProductionLog, kept_input, read_log
from pipeline.release.registry import Registry, champion_dir


@pytest.fixture
def client(workspace):
    p = load_params("params.yaml")
    log = ProductionLog(p.paths.log, flush_records=1)
    with TestClient(create_app(p, log)) as c:
        yield c
    log.close()


def test_predicts_single_and_batch_and_logs_each(client):
    r = client.post("/predict", json={"text": "free prize win cash now"})
    assert r.status_code == 200
    body = r.json()
    assert body["model_version"] == "v0001" and body["predictions"][0]["label"] == "spam"
    assert abs(sum(body["predictions"][0]["probabilities"].values()) - 1) < 1e-6
    r = client.post("/predict", json={"texts": ["hello see you later", "claim your prize now", "lunch tomorrow"]})
    assert [p["label"] for p in r.json()["predictions"]] == ["ham", "spam", "ham"]
    log = read_log("production/log")
    assert len(log) == 4 and set(log["model_version"]) == {"v0001"}
    assert {"length", "word_count", "oov_share", "non_ascii_share", "embedding", "pred", "confidence"} <= set(log)
    assert len(log["embedding"].iloc[0]) == 32
    # each record says which input it was (the content hash prepare computes) and keeps the text
    # for the label queue; the class probabilities for the label-free estimate
    assert list(log["text"]) == ["free prize win cash now", "hello see you later", "claim your prize now",
                                 "lunch tomorrow"]
    assert log["input_sha256"].iloc[0] == hashlib.sha256(b"free prize win cash now").hexdigest()
    assert log["probs"].iloc[0].shape == (2,) and abs(float(log["probs"].iloc[0].sum()) - 1) < 1e-5


def test_health_model_and_openapi(client):
    assert client.get("/health").json()["model_version"] == "v0001"
    m = client.get("/model").json()
    assert m["version"] == "v0001" and m["labels"] == ["ham", "spam"] and m["test_metrics"]["macro_f1"] > 0.5
    assert "card" not in m and str(Path.cwd()) not in json.dumps(m)  # a public summary: no card, no paths
    assert "/predict" in client.get("/openapi.json").json()["paths"]


@pytest.mark.parametrize("kwargs, status, words", [
    ({"json": {"texts": []}}, 422, "empty"),
    ({"json": {"texts": [1, 2]}}, 422, "texts[0] is a number, not a string"),
    ({"json": {"texts": "one text"}}, 422, '"texts" is a string; send a list of strings'),
    ({"json": {"text": None}}, 422, "text is a null, not a string"),
    ({"json": {"texts": ["ok", "  \t\n"]}}, 422, "texts[1] has no visible character"),
    ({"json": {"text": "\u00a0\u2003\u200b"}}, 422, "text has no visible character"),
    ({"json": {"text": "\u0000\u0000\u0001"}}, 422, "text has no visible character"),
    ({"content": b'{"text": "\\ud800"}', "headers": {"content-type": "application/json"}}, 422,
     "a lone surrogate"),
    ({"content": b"[" * 100_000 + b"]" * 100_000, "headers": {"content-type": "application/json"}}, 400,
     "nested too deeply"),
    ({"json": {"message": "hi"}}, 422, '{"text"'),
    ({"json": ["hi"]}, 422, '{"text"'),
    ({"content": b'{"texts": [', "headers": {"content-type": "application/json"}}, 400, "not valid JSON"),
    ({"content": b"\xff\xfe", "headers": {"content-type": "application/json"}}, 400, "not valid JSON"),
    ({"files": {"files": ("a.png", b"png?", "image/png")}}, 415, "classifies text"),
    ({"content": b"hello", "headers": {"content-type": "text/plain"}}, 415, "classifies text"),
    ({"json": {"texts": ["x"] * 65}}, 413, "serve.max_batch=64"),
    ({"content": b'{"text": "' + b"a" * (21 * 2**20) + b'"}', "headers": {"content-type": "application/json"}}, 413,
     "larger than serve.max_upload_mb=20 MB"),
])
def test_bad_requests_get_a_4xx_that_says_why(client, kwargs, status, words):
    r = client.post("/predict", **kwargs)
    assert r.status_code == status and words in r.json()["detail"], r.text
    assert read_log("production/log").empty  # nothing logged for a refused request


def test_a_new_champion_is_served_without_restart(client):
    reg = Registry("registry")
    src = reg.local("v0001")
    with reg.lock():
        v2 = reg.register({"model": src / "model", "onnx": src / "onnx"}, "blessed", {"test": {}}, "# Model card: v0002")
        reg.promote(v2.name)
    time.sleep(0.1)  # serve.reload_seconds=0.05 in this workspace
    assert client.post("/predict", json={"text": "ok"}).json()["model_version"] == "v0002"
    assert client.get("/health").json()["model_version"] == "v0002"


def test_an_unreachable_registry_keeps_the_loaded_champion_serving(client, monkeypatch):
    import graft.serve as serve_mod

    def unreachable(_root):
        raise ConnectionError("storage.internal:9000 refused the connection")

    monkeypatch.setattr(serve_mod, "champion_dir", unreachable)
    time.sleep(0.1)  # past serve.reload_seconds: the next request re-reads the pointer
    r = client.post("/predict", json={"text": "free prize now"})
    assert r.status_code == 200 and r.json()["model_version"] == "v0001"
    health = client.get("/health").json()
    assert health["status"] == "ok" and "the registry cannot be read" in health["warning"]
    assert "still serving v0001" in health["warning"] and "storage.internal" not in health["warning"]
    monkeypatch.setattr(serve_mod, "champion_dir", champion_dir)  # the storage is back
    time.sleep(0.1)
    assert client.get("/health").json()["warning"] is None


def test_without_a_champion_the_service_says_so(workspace):
    shutil.rmtree("registry")
    with TestClient(create_app(load_params("params.yaml"), ProductionLog("production/log"))) as c:
        assert c.get("/health").status_code == 503
        assert c.get("/live").json() == {"status": "alive"}  # alive, not ready: no restart loop
        r = c.post("/predict", json={"text": "hi"})
        assert r.status_code == 503 and "graft run" in r.json()["detail"]


def test_image_uploads_and_a_corrupt_upload(tmp_path, tiny_timm_dir, monkeypatch):
    import yaml

    from flows.steps import run_pipeline

    data = colour_images(tmp_path / "imgs", per_class=20)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump({
        "data": {"path": str(data)}, "validate": {"labels": ["blue", "red"]},
        "select": {"candidates": [{"name": "test_efficientnet", "weights": str(tiny_timm_dir)}], "cv_folds": 2,
                   "strategy": "linear_probe", "latency_runs": 3},
        "train": {"epochs": 1}, "export": {"latency_runs": 3, "quantize": False},
        "paths": {"cache": str(tmp_path / "cache")}}))
    monkeypatch.chdir(tmp_path)
    run_pipeline(Path("params.yaml"), say=lambda _m: None)
    p = load_params("params.yaml")
    with TestClient(create_app(p, ProductionLog(p.paths.log, flush_records=1))) as c:
        files = [("files", (f.name, f.read_bytes(), "image/png")) for f in sorted((data / "red").iterdir())[:3]]
        r = c.post("/predict", files=files)
        assert r.status_code == 200 and [x["label"] for x in r.json()["predictions"]] == ["red"] * 3
        r = c.post("/predict", files=[("files", ("broken.jpg", b"\xff\xd8\xff not really", "image/jpeg"))])
        assert r.status_code == 422 and "files[0] (broken.jpg): not a readable image" in r.json()["detail"]
        # 12000 x 12000 pixels in a few hundred KB: refused from the header, before any decoding
        r = c.post("/predict", files=[("files", ("huge.png", _huge_png(), "image/png"))])
        assert r.status_code == 413, r.text
        assert r.json()["detail"] == ("files[0] (huge.png) is 12000x12000 = 144,000,000 pixels, over the limit of "
                                      "25,000,000 (serve.max_pixels); downscale it")
        # a photo stored sideways with an EXIF orientation is classified upright
        r = c.post("/predict", files=[("files", ("rotated.jpg", _exif_rotated(), "image/jpeg"))])
        assert r.status_code == 200
        assert c.post("/predict", json={"text": "hi"}).status_code == 415
        assert c.post("/predict", files=[("other", ("x.txt", b"x", "text/plain"))]).status_code == 422
    log = read_log(p.paths.log)
    assert len(log) == 4 and {"brightness", "sharpness", "colourfulness", "width"} <= set(log)
    first = sorted((data / "red").iterdir())[0]
    assert log["input_sha256"].iloc[0] == hashlib.sha256(first.read_bytes()).hexdigest()
    assert kept_input(p.paths.log, log["input_sha256"].iloc[0]) == (
        f"{log['input_sha256'].iloc[0]}.png", first.read_bytes())  # the upload's bytes, by content hash
    assert (log["width"].iloc[3], log["height"].iloc[3]) == (20, 60)  # stored 60x20, seen upright
    # batch scoring of a folder: an unreadable file is skipped and named, the rest scored
    from pipeline.production.predictor import Predictor
    from pipeline.production.score import score
    from pipeline.release.registry import champion_dir

    incoming = tmp_path / "incoming"
    shutil.copytree(data / "blue", incoming / "cam1")
    (incoming / "cam1" / "truncated.png").write_bytes(b"\x89PNG\r\n\x1a\n")
    (incoming / "cam1" / "zz_huge.png").write_bytes(_huge_png())
    name, d = champion_dir(p.paths.registry)
    with ProductionLog(p.paths.log) as plog:
        result = score(Predictor(d, name), incoming, tmp_path / "preds.csv", plog, batch_size=8)
    assert result.scored == 20 and sum(result.counts.values()) == 20 and result.counts["blue"] >= 15
    skipped = dict((Path(f).name, why) for f, why in result.skipped)
    assert set(skipped) == {"truncated.png", "zz_huge.png"} and "serve.max_pixels" in skipped["zz_huge.png"]
    assert len(read_log(p.paths.log)) == 24


def _huge_png():
    import io
    import zlib

    from PIL import Image

    small = io.BytesIO()
    Image.new("L", (8, 8)).save(small, "PNG")  # then the header rewritten to claim 12000 x 12000
    raw = bytearray(small.getvalue())
    ihdr = raw[12:29]
    ihdr[4:8], ihdr[8:12] = (12000).to_bytes(4, "big"), (12000).to_bytes(4, "big")
    raw[12:29] = ihdr
    raw[29:33] = zlib.crc32(bytes(ihdr)).to_bytes(4, "big")
    return bytes(raw)


def _exif_rotated():
    import io

    from PIL import Image

    im = Image.new("RGB", (60, 20), "red")
    exif = im.getexif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    out = io.BytesIO()
    im.save(out, "JPEG", exif=exif)
    return out.getvalue()


def _start(extra):
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "graft.cli", "serve", "--port", str(port), *extra],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_until_up(f"http://127.0.0.1:{port}/health", proc, 120, "graft serve did not start")
    except Exception:
        proc.kill()
        raise
    return proc, port


def _send(port, n):
    for i in range(n):
        req = urllib.request.Request(f"http://127.0.0.1:{port}/predict", json.dumps({"text": f"free prize {i}"}).encode(),
                                     {"content-type": "application/json"})
        assert json.loads(urllib.request.urlopen(req, timeout=30).read())["model_version"] == "v0001"


def test_killing_the_server_loses_no_answered_request(workspace):
    # flush_records=1: every answered request is on disk before its response leaves
    proc, port = _start(["-S", "serve.flush_records=1", "-S", "serve.flush_seconds=3600"])
    _send(port, 25)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    assert len(read_log("production/log")) == 25
    # a graceful stop (SIGTERM) writes whatever is still buffered
    proc, port = _start(["-S", "serve.flush_records=1000", "-S", "serve.flush_seconds=3600"])
    _send(port, 13)
    assert len(read_log("production/log")) == 25
    proc.terminate()
    proc.wait(timeout=60)
    assert len(read_log("production/log")) == 38


def test_two_worker_processes_share_the_load_and_lose_no_record_on_sigterm(workspace):
    from concurrent.futures import ThreadPoolExecutor

    proc, port = _start(["--workers", "2", "-S", "serve.flush_records=1000", "-S", "serve.flush_seconds=3600"])
    children = [int(c) for c in Path(f"/proc/{proc.pid}/task/{proc.pid}/children").read_text().split()]
    workers = {c for c in children if b"spawn_main" in Path(f"/proc/{c}/cmdline").read_bytes()}
    assert len(workers) == 2  # uvicorn's supervisor started two server processes
    with ThreadPoolExecutor(8) as pool:  # concurrent clients; the kernel decides which process accepts
        list(pool.map(lambda i: _send(port, 5), range(12)))
    proc.terminate()  # uvicorn's supervisor stops each worker; each flushes its own buffer
    proc.wait(timeout=60)
    log = read_log("production/log")
    assert len(log) == 60  # every answered request
    writers = {int(p.name.split("-")[-2]) for p in Path("production/log").glob("date=*/hour=*/part-*.parquet")}
    assert writers and writers <= workers, (writers, workers)  # each process writes its own parts


def test_serving_int8_refuses_at_start_when_the_champion_has_none(workspace):
    from typer.testing import CliRunner

    from graft.cli import app

    r = CliRunner().invoke(app, ["serve", "--set", "serve.model=int8"])
    assert r.exit_code == 2, r.output
    assert "v0001 has no int8 model (export.quantize was off when it was exported)" in r.output
    assert "serve.model: fp32" in r.output


def test_graft_ort_threads_sets_each_sessions_intra_op_threads(workspace, monkeypatch):
    from pipeline.production.runtime import THREADS_ENV, ort_session

    model = Path("registry/versions/v0001/onnx/model.onnx")
    monkeypatch.setenv(THREADS_ENV, "1")
    session, _ = ort_session(model)
    assert session.get_session_options().intra_op_num_threads == 1
    monkeypatch.delenv(THREADS_ENV)
    assert ort_session(model)[0].get_session_options().intra_op_num_threads == 0  # onnxruntime's default


def test_with_a_token_every_endpoint_but_the_probes_needs_it(workspace, monkeypatch, caplog):
    secret = "sentinel-token-7f3a9c"
    monkeypatch.setenv("GRAFT_API_TOKEN", secret)
    p = load_params("params.yaml")
    log = ProductionLog(p.paths.log, flush_records=1)
    with caplog.at_level("DEBUG"), TestClient(create_app(p, log)) as c:
        for path in ("/model", "/docs", "/openapi.json"):
            r = c.get(path)
            assert r.status_code == 401 and r.headers["www-authenticate"] == "Bearer", path
            assert secret not in r.text
        assert c.post("/predict", json={"text": "free prize"}).status_code == 401
        wrong = {"Authorization": "Bearer sentinel-token-7f3a9d"}
        assert c.post("/predict", json={"text": "free prize"}, headers=wrong).status_code == 401
        assert c.get("/live").status_code == 200 and c.get("/health").status_code == 200
        ok = {"Authorization": f"Bearer {secret}"}
        assert c.post("/predict", json={"text": "free prize"}, headers=ok).status_code == 200
        assert c.get("/model", headers=ok).status_code == 200
    log.close()
    assert len(read_log(p.paths.log)) == 1  # refused requests are not predictions
    assert secret not in caplog.text


def test_the_token_can_come_from_a_file_and_a_missing_file_is_named(workspace, monkeypatch, tmp_path):
    from pipeline.core.errors import GraftError

    monkeypatch.delenv("GRAFT_API_TOKEN", raising=False)
    (tmp_path / "token").write_text("from-a-secret\n")
    p = load_params("params.yaml")
    p = p.model_copy(update={"serve": p.serve.model_copy(update={"token_file": str(tmp_path / "token")})})
    with TestClient(create_app(p, ProductionLog(p.paths.log))) as c:
        assert c.get("/model").status_code == 401
        assert c.get("/model", headers={"Authorization": "Bearer from-a-secret"}).status_code == 200
    gone = p.model_copy(update={"serve": p.serve.model_copy(update={"token_file": str(tmp_path / "nope")})})
    with pytest.raises(GraftError, match=r"serve.token_file: cannot read .*nope"):
        create_app(gone, ProductionLog(p.paths.log))


def test_odd_filenames_and_oversized_multipart_bodies_are_4xx_never_500(tmp_path, monkeypatch, tiny_timm_dir):
    """An image champion: a NUL or newline in an upload's name, a path in it, a body over
    serve.max_request_mb (declared, or only found while it streams), a broken multipart body."""
    import io as _io

    import yaml
    from conftest import run_pipeline_in
    from PIL import Image

    monkeypatch.chdir(tmp_path)
    colour_images(tmp_path / "imgs", per_class=12)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump({
        "data": {"path": "imgs"}, "validate": {"labels": ["blue", "red"]},
        "select": {"candidates": [{"name": "test_efficientnet", "weights": str(tiny_timm_dir / "model.safetensors")}],
                   "cv_folds": 2, "strategy": "linear_probe", "latency_runs": 3},
        "export": {"latency_runs": 3, "quantize": False}, "gate": {"bounds": {"accuracy": None, "ece": None,
                                                                              "macro_f1": {"min": 0.0}}},
        "serve": {"max_request_mb": 0.05}, "paths": {"cache": str(tmp_path / "cache")}}))
    run_pipeline_in(tmp_path)
    p = load_params("params.yaml")
    buf = _io.BytesIO()
    Image.new("RGB", (32, 32), (200, 30, 30)).save(buf, "PNG")
    png = buf.getvalue()
    log = ProductionLog(p.paths.log, flush_records=1)
    with TestClient(create_app(p, log)) as c:
        for name in ("a\x00b.png", "line\nbreak.png", "../../etc/passwd.png", "x.\x00\x01png"):
            r = c.post("/predict", files=[("files", (name, png, "image/png"))])
            assert r.status_code == 200, (name, r.text)
        big = c.post("/predict", files=[("files", ("big.png", b"0" * 80_000, "image/png"))])
        assert big.status_code == 413 and "serve.max_request_mb" in big.json()["detail"]

        def chunks():  # no Content-Length: the limit is found while the body streams in
            yield b"--b\r\nContent-Disposition: form-data; name=\"files\"; filename=\"s.png\"\r\n\r\n"
            for _ in range(20):
                yield b"0" * 8192
        streamed = c.post("/predict", content=chunks(), headers={"content-type": "multipart/form-data; boundary=b"})
        assert streamed.status_code == 413
        broken = c.post("/predict", content=b"--b\r\nnot a part", headers={"content-type": "multipart/form-data; boundary=b"})
        assert broken.status_code in (400, 422)
    log.close()
    kept = sorted(f.name for f in (tmp_path / p.paths.log / "inputs").rglob("*") if f.is_file())
    assert len(kept) == 1 and kept[0].endswith(".png")  # one copy, whatever names the clients chose


def test_no_secret_or_machine_path_in_any_body_card_summary_or_log(workspace, monkeypatch, caplog):
    """Sentinel secrets in the environment and the workspace's absolute path: none of them in any
    HTTP body (good and bad requests), the model card, the run summary or the server's log."""
    secrets = {"GRAFT_API_TOKEN": "sentinel-api-token-93ab", "AWS_SECRET_ACCESS_KEY": "sentinel-aws-secret-17cd",
               "PREFECT_API_AUTH_STRING": "graft:sentinel-prefect-55ef"}
    for key, value in secrets.items():
        monkeypatch.setenv(key, value)
    here = str(Path.cwd().resolve())
    card = Path("registry/versions/v0001/card.md").read_text()
    p = load_params("params.yaml")
    log = ProductionLog(p.paths.log, flush_records=1)
    auth = {"Authorization": f"Bearer {secrets['GRAFT_API_TOKEN']}"}
    bodies = []
    with caplog.at_level("INFO"), TestClient(create_app(p, log)) as c:
        for method, path, kwargs in [
                ("post", "/predict", {"json": {"text": "free prize"}}), ("post", "/predict", {"json": {"text": 1}}),
                ("post", "/predict", {"content": b"{", "headers": {"content-type": "application/json"}}),
                ("post", "/predict", {"files": [("files", ("x.png", b"x", "image/png"))]}),
                ("get", "/model", {}), ("get", "/health", {}), ("get", "/openapi.json", {}), ("get", "/docs", {})]:
            for headers in ({}, auth):
                kw = {**kwargs, "headers": {**kwargs.get("headers", {}), **headers}}
                bodies.append(getattr(c, method)(path, **kw).text)
    shutil.rmtree("registry")  # no champion: the 503 says so without a path
    with caplog.at_level("INFO"), TestClient(create_app(p, log)) as c:
        gone = c.post("/predict", json={"text": "hi"}, headers=auth)
        assert gone.status_code == 503
        bodies += [gone.text, c.get("/health").text]
    log.close()
    texts = {"bodies": "\n".join(bodies), "log": caplog.text, "card": card,
             "summary": Path("outputs/gate/run-summary.json").read_text()}
    for name, text in texts.items():
        for value in [*secrets.values(), here, str(Path.home())]:
            assert value not in text, (name, value)
    assert "graft run" in bodies[-2] and "Model card: v0001" in card
