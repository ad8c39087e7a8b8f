"""The end-to-end demo: training flows on both demo workspaces, then the production loop.

1. training_flow on the image workspace (params.yaml, through `dvc repro`) and on the text
   workspace (examples/text/params.yaml): each champion promoted.
2. The production loop on the text model (all-MiniLM-L6-v2), in a fresh DVC workspace under
   outputs/demo/: `graft serve` in a subprocess, clean traffic over HTTP -> monitoring_flow: no
   drift -> shifted traffic (new products, new vocabulary, Spanish and German customers) ->
   labelled examples of the new traffic land in the inbox -> monitoring_flow: drift -> it
   triggers training_flow, which ingests the batch (a new DVC data version), retrains, gates
   against the champion and promotes (or rejects, with reasons) -> the running server picks up
   the new champion without a restart.
3. outputs/demo/demo-summary.json and the HTML reports.

Outside graft's source tree (an installed package), it runs in ./graft-demo: the text demo (its
weights ship with graft) and the production loop; the image demo needs the source tree's
ImageNet weights and is left out.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
import urllib.request
from contextlib import contextmanager
from importlib import resources
from pathlib import Path
from typing import Any

import yaml
from rich.console import Console

from flows.steps import RunSummary
from graft import render
from graft.local_service import free_port, wait_until_up
from pipeline.core.artifacts import EXPORT_REPORT, RUN_SUMMARY, VALIDATION_HTML
from pipeline.core.config import load_params
from pipeline.core.io import write_json_atomic
from pipeline.data.demo import make_image_demo, make_text_batch, make_text_demo, text_rows
from pipeline.production.prodlog import read_log

DEMOS = {"image": Path("params.yaml"), "text": Path("examples/text/params.yaml")}
DEMO_DATA = {"image": make_image_demo, "text": make_text_demo}  # what generates each demo's data
DEMO_DIR = Path("outputs/demo")
TRAFFIC = 300  # requests per window, one text each (sent in batches of 10)


def _http(url: str, body: dict[str, Any] | None = None, timeout: float = 30) -> dict[str, Any]:
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, headers={"content-type": "application/json"} if data else {})
    with urllib.request.urlopen(req, timeout=timeout) as resp:
        return json.loads(resp.read())


@contextmanager
def _server(workspace: Path, console: Console):
    port = free_port()
    log = open(workspace / "serve.log", "w")  # noqa: SIM115 - closed below
    proc = subprocess.Popen([sys.executable, "-m", "graft.cli", "serve", "--port", str(port)], cwd=workspace,
                            stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        health = json.loads(wait_until_up(f"{url}/health", proc, 180,
                                          f"graft serve did not start; see {workspace / 'serve.log'}"))
        console.print(f"graft serve on {url}: {health['model_version']} ({health['provider']}); docs at {url}/docs")
        yield url
    finally:
        proc.terminate()  # SIGTERM: the server flushes its production log on the way out
        proc.wait(timeout=60)
        log.close()


def _send(url: str, texts: list[str], flush_wait: float) -> dict[str, int]:
    counts: dict[str, int] = {}
    for i in range(0, len(texts), 10):
        for p in _http(f"{url}/predict", {"texts": texts[i:i + 10]})["predictions"]:
            counts[p["label"]] = counts.get(p["label"], 0) + 1
    time.sleep(flush_wait)  # the server writes its log at least every serve.flush_seconds
    return counts


def _true_accuracy(rows: list[tuple[str, str]]) -> float:
    """How right the served model was on these texts: their logged predictions against the labels
    the demo generated them with (what the monitor has to estimate without them)."""
    truth = dict(rows)
    log = read_log(load_params("params.yaml").paths.log)
    log = log[log["text"].isin(truth)].drop_duplicates("text", keep="last")
    return float((log["pred"] == log["text"].map(truth)).mean())


def _workspace(console: Console) -> Path:
    """outputs/demo: the text demo data and params, a DVC repository of its own (no git), a local remote."""
    shutil.rmtree(DEMO_DIR, ignore_errors=True)
    (DEMO_DIR / "data").mkdir(parents=True)
    text = load_params(DEMOS["text"])
    shutil.copy(text.data.path, DEMO_DIR / "data" / "tickets.csv")
    params = {
        "data": {"path": "data/tickets.csv"},
        "validate": {"labels": list(text.validate_.labels)},
        "select": {"candidates": [c.model_dump(exclude_defaults=True) for c in text.select.candidates]},
        "train": {"max_length": text.train.max_length},
        "serve": {"flush_seconds": 1.0},
        "monitor": {"window_records": TRAFFIC, "min_records": 200},
        "paths": {"cache": str(Path(text.paths.cache).resolve())},  # reuse the embedding cache
    }
    (DEMO_DIR / "params.yaml").write_text(
        "# the demo's production workspace (written by `graft demo`)\n" + yaml.safe_dump(params, sort_keys=False))
    from flows.steps import dvc

    for args in (["init", "--no-scm", "-q"], ["remote", "add", "-d", "local", "../demo-dvcstore"],
                 ["add", "-q", "data/tickets.csv"]):
        dvc(*args, cwd=DEMO_DIR)
    console.print(f"demo workspace {DEMO_DIR}: params.yaml, data/tickets.csv under DVC (remote ../demo-dvcstore)")
    return DEMO_DIR


def run_demo(console: Console) -> dict[str, Any]:
    from flows.monitoring import monitoring_flow
    from flows.training import training_flow

    start = time.perf_counter()
    done: list[str] = []
    demos = dict(DEMOS)
    if not all(p.exists() for p in DEMOS.values()):  # not graft's source tree: the text demo in ./graft-demo
        folder = Path("graft-demo").resolve()
        (folder / DEMOS["text"]).parent.mkdir(parents=True, exist_ok=True)
        (folder / DEMOS["text"]).write_text(
            resources.files("graft").joinpath("templates", "demo-text.yaml").read_text(encoding="utf-8"))
        os.chdir(folder)
        demos = {"text": DEMOS["text"]}
        done.append(f"outside graft's source tree: the text demo and the production loop in {folder} "
                    "(the image demo needs the source tree's ImageNet weights)")
    for demo, params_file in demos.items():  # all data first: both live under the DVC-tracked data/raw
        data = Path(load_params(params_file).data.path)
        if not data.exists():
            DEMO_DATA[demo](data)
            done.append(f"generated the {demo} demo data in {data}")
    for demo, params_file in demos.items():
        console.rule(f"{demo}: training_flow({params_file})")
        s = training_flow(params_file=str(params_file), reason="demo")
        render.run_summary(console, RunSummary.from_dict(s))
        t = s["test_metrics"]
        done.append(f"{demo}: {s['model']} ({s['strategy']}), test macro-F1 {t['macro_f1']:.3f}, "
                    f"ONNX {t['latency_ms_b1']:.1f} ms at batch 1; {s['version']} {s['status']}"
                    f"{', champion' if s['champion'] == s['version'] else ''} ({s['via']})")

    console.rule("production loop (text, all-MiniLM-L6-v2)")
    ws = _workspace(console)
    root = Path.cwd()
    os.chdir(ws)  # the flows read params.yaml and its relative paths from the workspace
    try:
        first = training_flow(params_file="params.yaml", reason="demo: first model")
        before = first["champion"]
        reports: list[str] = []
        with _server(Path("."), console) as url:
            clean_rows = text_rows(TRAFFIC // 3, seed=101)
            clean = _send(url, [t for t, _ in clean_rows], 2.0)
            console.print(f"clean traffic: {TRAFFIC} texts over HTTP -> {clean}")
            m_clean = monitoring_flow(params_file="params.yaml")["drift"]
            acc_clean = _true_accuracy(clean_rows)
            reports.append(shutil.copy("outputs/monitor/report.html", "monitor-clean.html"))
            console.print(f"monitor (clean): {m_clean['decision']}: {'; '.join(m_clean['reasons'])}")

            shifted_rows = text_rows(TRAFFIC // 3, seed=102, shifted=True)
            shifted = _send(url, [t for t, _ in shifted_rows], 2.0)
            console.print(f"shifted traffic (new products and vocabulary, Spanish and German): {TRAFFIC} texts -> {shifted}")
            make_text_batch("data/inbox/batch-0001.csv", per_class=40, seed=103, shifted=True)
            console.print("labelled examples of the new traffic arrive: data/inbox/batch-0001.csv (120 rows)")
            loop = monitoring_flow(params_file="params.yaml")
            m_shift, retrain = loop["drift"], loop["training"]
            acc_shift = _true_accuracy(shifted_rows)
            reports.append(shutil.copy("outputs/monitor/report.html", "monitor-shifted.html"))
            console.print(f"monitor (shifted): {m_shift['decision']}: {'; '.join(m_shift['reasons'])}")
            time.sleep(load_params("params.yaml").serve.reload_seconds + 0.5)
            served = _http(f"{url}/health")["model_version"]
        paths = load_params("params.yaml").paths
        run = json.loads((Path(paths.gate) / RUN_SUMMARY).read_text(encoding="utf-8"))
        after = run["champion"]
        export = json.loads((Path(paths.export) / EXPORT_REPORT).read_text(encoding="utf-8"))
        summary = {
            "champion_before": before, "champion_after": after,
            "gate": {"version": run["version"], "status": run["status"], "reasons": run["gate"]["reasons"]},
            "drift_clean": bool(m_clean["drift"]), "drift_shifted": bool(m_shift["drift"]),
            "retrained": retrain is not None, "parity_max_abs_diff": export["parity"]["max_abs_diff_logits"],
            "drift_scores": {
                "clean": {"drift_share": m_clean["drift_share"], "embedding": m_clean["embedding"].get("score")},
                "shifted": {"drift_share": m_shift["drift_share"], "embedding": m_shift["embedding"].get("score")}},
            "accuracy_without_labels": {  # the monitor's label-free estimate, and the truth the demo knows
                "clean": {"estimated": m_clean["performance"].get("accuracy"), "true": acc_clean},
                "shifted": {"estimated": m_shift["performance"].get("accuracy"), "true": acc_shift}},
            "served_after_retraining": served,
            "reports": [str((Path.cwd() / r).resolve().relative_to(root)) for r in
                        [*reports, Path(paths.validate_) / VALIDATION_HTML,
                         Path(paths.registry) / "versions" / after / "card.md"]],
            "seconds": round(time.perf_counter() - start, 1),
        }
        write_json_atomic("demo-summary.json", summary)
    finally:
        os.chdir(root)

    console.rule("what the demo did")
    for line in done:
        console.print(f"- {line}")
    console.print(f"- production loop: champion {before}; clean traffic: {m_clean['decision']}; shifted traffic: "
                  f"{m_shift['decision']}; retrained: {summary['gate']['version']} {summary['gate']['status']}; "
                  f"champion now {after}, served by the running server as {served}")
    est = summary["accuracy_without_labels"]
    console.print("- accuracy estimated without labels vs true: " + "; ".join(
        f"{k} traffic {v['estimated']:.3f} vs {v['true']:.3f}" for k, v in est.items() if v["estimated"] is not None))
    console.print(f"summary: {ws / 'demo-summary.json'}")
    for r in summary["reports"]:
        console.print(f"report: {r}")
    return summary
