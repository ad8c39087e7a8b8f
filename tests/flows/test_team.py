"""graft on a team's infrastructure: PostgreSQL, a Prefect server on it, `graft deploy`, and one
`graft worker --pool` per pool, each in a workspace folder of its own as if on its own machine.

The services are started and stopped by the test (tests/services.py), on loopback only. The
two workspaces share the data, the inbox and the registry through absolute paths (a shared
filesystem); their stage outputs are their own.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
import yaml
from conftest import shifted_texts, spam_rows, spam_texts, text_params, write_rows
from services import postgres, postgres_bin, prefect_server, psql, restart_postgres

from pipeline.core.storage import Store
from pipeline.release.registry import Registry

pytestmark = pytest.mark.skipif(postgres_bin() is None and not os.environ.get("GRAFT_REQUIRE_SERVICES"),
                                reason="PostgreSQL is not installed (.ci/run installs it)")
FINAL = {"COMPLETED", "FAILED", "CRASHED", "CANCELLED"}
AUTH = "graft:team-test-auth-5e1f"  # the server's PREFECT_SERVER_API_AUTH_STRING, every client's PREFECT_API_AUTH_STRING


def _api(url: str, path: str, body: dict | None = None, auth: str | None = AUTH) -> object:
    headers = {"content-type": "application/json",
               **({"authorization": "Basic " + base64.b64encode(auth.encode()).decode()} if auth else {})}
    req = urllib.request.Request(f"{url}{path}", data=json.dumps(body).encode() if body is not None else None,
                                 headers=headers, method="POST" if body is not None else "GET")
    with urllib.request.urlopen(req, timeout=30) as resp:
        return json.loads(resp.read())


def _runs(api: str) -> list[dict]:
    """The flow runs due by now (not those the schedules created for later)."""
    soon = (datetime.now(timezone.utc) + timedelta(minutes=5)).isoformat()
    runs = _api(api, "/flow_runs/filter", {"sort": "EXPECTED_START_TIME_ASC", "limit": 200,
                                           "flow_runs": {"expected_start_time": {"before_": soon}}})
    flows = {f["id"]: f["name"] for f in _api(api, "/flows/filter", {})}
    return [{**r, "flow": flows.get(r["flow_id"], "?")} for r in runs]


def _wait(api: str, done, what: str, timeout: float = 420) -> list[dict]:
    deadline = time.monotonic() + timeout
    while True:
        runs = _runs(api)
        if done(runs):
            return runs
        if time.monotonic() > deadline:
            states = [(r["flow"], r["name"], r["state_type"], (r.get("state") or {}).get("message")) for r in runs]
            raise AssertionError(f"timed out waiting for {what}: {states}")
        time.sleep(2)


def _workspace(folder: Path, shared: Path, bert: Path) -> Path:
    folder.mkdir(parents=True)
    params = text_params(str(shared / "data" / "t.csv"), bert, shared / "cache",
                         paths={"registry": str(shared / "registry"), "inbox": str(shared / "inbox"),
                                "log": str(shared / "log")},
                         schedule={"training_cron": "0 3 1 1 *", "monitoring_minutes": 10000.0,
                                   "ingest_minutes": 10000.0, "crashed_after_seconds": 65.0})
    (folder / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    return folder


def _kill_tree(pid: int) -> None:
    """SIGKILL a process and everything it started (a worker and its flow-run process): a machine dying."""
    import psutil

    root = psutil.Process(pid)
    for proc in [*root.children(recursive=True), root]:
        with contextlib.suppress(psutil.NoSuchProcess):
            proc.kill()


def _trigger(env: dict[str, str], deployment: str) -> None:
    subprocess.run([sys.executable, "-m", "prefect", "deployment", "run", deployment], env=env,
                   capture_output=True, text=True, timeout=120, check=True)


def _registry_whole(registry: Path) -> None:
    """The champion points at a complete version; no version folder is half-written."""
    champion = json.loads((registry / "champion.json").read_text())["version"]
    for version in (registry / "versions").iterdir():
        assert (version / "card.md").exists() and (version / "onnx" / "model.onnx").exists(), version
    assert (registry / "versions" / champion).is_dir()


def test_deployments_on_a_postgres_backed_server_run_on_two_pools(tmp_path, tiny_bert_dir):
    shared = tmp_path / "shared"
    spam_texts(shared / "data" / "t.csv", per_class=40)
    cpu = _workspace(tmp_path / "cpu-machine", shared, tiny_bert_dir)
    gpu = _workspace(tmp_path / "gpu-machine", shared, tiny_bert_dir)
    (tmp_path / "prefect").mkdir()
    start = time.perf_counter()
    with postgres() as db, prefect_server(tmp_path / "prefect", db, auth=AUTH) as api:
        # with the server's auth on, a client without the auth string is refused, one with it is not
        with pytest.raises(urllib.error.HTTPError) as refused:
            _api(api, "/deployments/filter", {}, auth=None)
        assert refused.value.code == 401
        no_auth = {**os.environ, "PREFECT_API_URL": api, "PREFECT_HOME": str(tmp_path / "prefect")}
        no_auth.pop("PREFECT_API_AUTH_STRING", None)
        denied = subprocess.run([sys.executable, "-m", "graft.cli", "deploy"], cwd=cpu, env=no_auth,
                                capture_output=True, text=True, timeout=300)
        assert denied.returncode == 2 and "PREFECT_API_AUTH_STRING" in denied.stderr + denied.stdout, denied.stderr
        assert AUTH not in denied.stdout + denied.stderr
        env = {**os.environ, "PREFECT_API_URL": api, "PREFECT_API_AUTH_STRING": AUTH, "PREFECT_WORKER_QUERY_SECONDS": "1",
               "PREFECT_HOME": str(tmp_path / "prefect"), "NO_COLOR": "1", "COLUMNS": "200"}
        graft = [sys.executable, "-m", "graft.cli"]
        deployed = subprocess.run([*graft, "deploy"], cwd=cpu, env=env, capture_output=True, text=True, timeout=300)
        assert deployed.returncode == 0, deployed.stdout + deployed.stderr
        assert "training-flow/graft-training: pool graft-gpu (created)" in deployed.stdout
        assert "ingest-flow/graft-ingest: pool graft-cpu (created)" in deployed.stdout
        assert "monitoring-flow/graft-monitoring: pool graft-cpu" in deployed.stdout
        training = _api(api, "/deployments/name/training-flow/graft-training")
        assert training["work_pool_name"] == "graft-gpu" and training["entrypoint"] == "flows.training.training_flow"
        assert training["global_concurrency_limit"]["limit"] == 1

        workers = [subprocess.Popen([*graft, "worker", "--pool", pool], cwd=ws, env=env,
                                    stdout=open(ws / "worker.log", "w"), stderr=subprocess.STDOUT)  # noqa: SIM115
                   for pool, ws in (("graft-cpu", cpu), ("graft-gpu", gpu))]
        try:
            write_rows(shared / "inbox" / "batch-0001.csv", spam_rows(20, seed=5))
            run = subprocess.run([sys.executable, "-m", "prefect", "deployment", "run", "ingest-flow/graft-ingest"],
                                 env=env, capture_output=True, text=True, timeout=120)
            assert run.returncode == 0, run.stdout + run.stderr
            runs = _wait(api, lambda rs: any(r["flow"] == "training-flow" and r["state_type"] in FINAL for r in rs)
                         and all(r["state_type"] in FINAL for r in rs), "ingest, then the training it triggers")
            by_flow = {r["flow"]: r for r in runs}
            assert {r["flow"]: r["state_type"] for r in runs} == {"ingest-flow": "COMPLETED",
                                                                 "training-flow": "COMPLETED"}, runs
            assert by_flow["ingest-flow"]["work_pool_name"] == "graft-cpu"
            assert by_flow["training-flow"]["work_pool_name"] == "graft-gpu"
            assert (gpu / "outputs" / "train" / "model").is_dir() and not (cpu / "outputs" / "train").exists()
            assert (cpu / "outputs" / "monitor" / "labels.parquet").exists()  # ingest kept the batch's labels
            assert json.loads((shared / "registry" / "champion.json").read_text())["version"] == "v0001"
            assert len((shared / "data" / "t.csv").read_text().splitlines()) == 1 + 80 + 40  # the batch merged

            # the registry held by someone else: the training run ends in a clear state, not a crash
            with Registry(shared / "registry").lock():
                subprocess.run([sys.executable, "-m", "prefect", "deployment", "run", "training-flow/graft-training"],
                               env=env, capture_output=True, text=True, timeout=120, check=True)
                runs = _wait(api, lambda rs: len(rs) == 3 and all(r["state_type"] in FINAL for r in rs),
                             "a training run while the registry is held")
            skipped = runs[-1]
            assert (skipped["state_type"], skipped["state_name"]) == ("CANCELLED", "Skipped"), skipped
            assert "another graft run" in skipped["state"]["message"]
            assert int(psql(db, "select count(*) from flow_run")) >= 3  # the server's state is in PostgreSQL

            # faults: the training worker's machine dies mid-run (the worker and its flow-run process killed)
            def trainings(state: str):
                return lambda rs: sum(r["flow"] == "training-flow" and r["state_type"] == state for r in rs)

            done_before = trainings("COMPLETED")(runs)
            _trigger(env, "training-flow/graft-training")
            _wait(api, lambda rs: trainings("RUNNING")(rs) == 1, "a training run to start", timeout=300)
            time.sleep(3)
            _kill_tree(workers[1].pid)
            killed = time.monotonic()
            runs = _wait(api, lambda rs: trainings("CRASHED")(rs) == 1 and not trainings("RUNNING")(rs),
                         "the dead run marked crashed", timeout=300)
            crash_seconds = time.monotonic() - killed
            crashed = next(r for r in runs if r["state_type"] == "CRASHED")
            assert "no heartbeat" in crashed["state"]["message"]
            with Registry(shared / "registry").lock():  # the dead holder's lock went with it
                _registry_whole(shared / "registry")
            workers[1] = subprocess.Popen([*graft, "worker", "--pool", "graft-gpu"], cwd=gpu, env=env,
                                          stdout=open(gpu / "worker-2.log", "w"), stderr=subprocess.STDOUT)  # noqa: SIM115
            _trigger(env, "training-flow/graft-training")  # the next run trains (and gates) as if nothing happened
            _wait(api, lambda rs: trainings("COMPLETED")(rs) == done_before + 1 and not trainings("RUNNING")(rs)
                  and not trainings("SCHEDULED")(rs) and not trainings("PENDING")(rs), "the next training run")
            _registry_whole(shared / "registry")

            # PostgreSQL restarts in the middle of a run: the run still completes
            _trigger(env, "training-flow/graft-training")
            _wait(api, lambda rs: trainings("RUNNING")(rs) == 1, "a training run to start", timeout=300)
            restart_seconds = restart_postgres(db)
            restarted = time.monotonic()
            runs = _wait(api, lambda rs: trainings("COMPLETED")(rs) == done_before + 2 and not trainings("RUNNING")(rs),
                         "the run across a database restart")
            recovery_seconds = time.monotonic() - restarted
            _registry_whole(shared / "registry")
            print(f"\nworker killed mid-run: marked crashed after {crash_seconds:.0f} s (crashed_after_seconds 65); "
                  f"PostgreSQL restart {restart_seconds:.1f} s, the run completed {recovery_seconds:.0f} s later")
        finally:
            for w in workers:
                w.terminate()
            for w in workers:
                w.wait(timeout=60)
    print(f"\nPostgreSQL + Prefect server + deploy + 2 workers, ingest -> training on two pools: "
          f"{time.perf_counter() - start:.0f} s")


def test_graft_worker_pool_and_deploy_need_a_server(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"}
    (tmp_path / "params.yaml").write_text("")
    for args in (["worker", "--pool", "graft-cpu"], ["deploy"]):
        proc = subprocess.run([sys.executable, "-m", "graft.cli", *args], cwd=tmp_path, env=env,
                              capture_output=True, text=True, timeout=120)
        assert proc.returncode == 2 and "PREFECT_API_URL" in proc.stderr, proc.stderr


# ---------------------------------------------------------------- the whole loop across processes


def _health(port: int) -> dict:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as resp:
            return json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return json.loads(exc.read())
    except OSError:
        return {}


SERVE_TOKEN = "team-serve-token-0c4d"  # every replica's GRAFT_API_TOKEN


def _predict(port: int, texts: list[str]) -> None:
    req = urllib.request.Request(f"http://127.0.0.1:{port}/predict", data=json.dumps({"texts": texts}).encode(),
                                 headers={"content-type": "application/json",
                                          "authorization": f"Bearer {SERVE_TOKEN}"})
    with urllib.request.urlopen(req, timeout=30) as resp:
        assert resp.status == 200


def test_the_production_loop_across_machines_on_postgres_and_s3(tmp_path, tiny_bert_dir, s3_bucket):
    """S3 inbox -> ingest (CPU pool) -> training (GPU pool) -> gate -> promotion on S3 -> two serving
    replicas switch -> traffic logged by both under one S3 prefix -> monitoring reads every record
    -> drift -> training triggered on the GPU pool; every flow run's final state from the server."""
    import fsspec

    start = time.perf_counter()
    shared = tmp_path / "shared"  # the dataset: a shared filesystem path
    spam_texts(shared / "data" / "t.csv", per_class=40)
    store = {"registry": f"{s3_bucket}/registry", "log": f"{s3_bucket}/production/log",
             "inbox": f"{s3_bucket}/inbox", "monitor": f"{s3_bucket}/monitor", "cache": f"{s3_bucket}/cache"}
    params = text_params(str(shared / "data" / "t.csv"), tiny_bert_dir, store["cache"], paths=store,
                         schedule={"training_cron": "0 3 1 1 *", "monitoring_minutes": 10000.0,
                                   "ingest_minutes": 10000.0},
                         serve={"reload_seconds": 1.0, "flush_seconds": 0.5, "flush_records": 20})
    machines = {}
    for name in ("cpu-machine", "gpu-machine", "serve-a", "serve-b"):
        machines[name] = tmp_path / name
        machines[name].mkdir()
        (machines[name] / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    (tmp_path / "prefect").mkdir()
    procs: list[subprocess.Popen] = []
    with postgres() as db, prefect_server(tmp_path / "prefect", db, auth=AUTH) as api:
        def env(machine: str) -> dict[str, str]:
            return {**os.environ, "PREFECT_API_URL": api, "PREFECT_API_AUTH_STRING": AUTH, "GRAFT_API_TOKEN": SERVE_TOKEN,
                    "PREFECT_WORKER_QUERY_SECONDS": "1",
                    "PREFECT_HOME": str(tmp_path / "prefect"), "GRAFT_CACHE_DIR": str(tmp_path / machine / ".cache"),
                    "NO_COLOR": "1"}

        graft = [sys.executable, "-m", "graft.cli"]
        subprocess.run([*graft, "deploy"], cwd=machines["cpu-machine"], env=env("cpu-machine"), check=True,
                       capture_output=True, timeout=300)
        try:
            for pool, machine in (("graft-cpu", "cpu-machine"), ("graft-gpu", "gpu-machine")):
                procs.append(subprocess.Popen([*graft, "worker", "--pool", pool], cwd=machines[machine],
                                              env=env(machine), stdout=open(machines[machine] / "worker.log", "w"),  # noqa: SIM115
                                              stderr=subprocess.STDOUT))
            ports = {}
            for machine in ("serve-a", "serve-b"):
                from graft.local_service import free_port

                ports[machine] = free_port()
                procs.append(subprocess.Popen([*graft, "serve", "--port", str(ports[machine])], cwd=machines[machine],
                                              env=env(machine), stdout=open(machines[machine] / "serve.log", "w"),  # noqa: SIM115
                                              stderr=subprocess.STDOUT))
            deadline = time.monotonic() + 180
            while any(_health(p).get("status") != "unavailable" for p in ports.values()):  # up, no champion yet
                assert time.monotonic() < deadline, [_health(p) for p in ports.values()]
                time.sleep(0.5)

            # a new labelled batch lands in the S3 inbox
            fs = fsspec.filesystem("s3")
            rows = "".join(f"{t},{lbl}\n" for t, lbl in spam_rows(20, seed=5))
            fs.pipe_file(f"{store['inbox'].removeprefix('s3://')}/batch-0001.csv", ("text,label\n" + rows).encode())
            subprocess.run([sys.executable, "-m", "prefect", "deployment", "run", "ingest-flow/graft-ingest"],
                           env=env("cpu-machine"), check=True, capture_output=True, timeout=120)

            # the replicas switch to the champion within serve.reload_seconds of the promotion
            switched: dict[str, float] = {}
            deadline = time.monotonic() + 420
            while len(switched) < 2:
                assert time.monotonic() < deadline, ("no switch", _runs(api), [_health(p) for p in ports.values()])
                for machine, port in ports.items():
                    if machine not in switched and _health(port).get("model_version") == "v0001":
                        switched[machine] = time.time()
                time.sleep(0.1)
            pointer = Registry(store["registry"])._pointer()
            promoted = datetime.fromisoformat(pointer["moved_at"]).timestamp()
            seconds = {m: round(t - promoted, 1) for m, t in switched.items()}
            assert pointer["version"] == "v0001" and all(
                0 <= s <= params["serve"]["reload_seconds"] + 5.0 for s in seconds.values()), seconds  # + load time

            # traffic the model never saw, through both replicas, logged under one S3 prefix
            sent = {"serve-a": 0, "serve-b": 0}
            texts = shifted_texts(120, seed=3)
            for i in range(0, len(texts), 10):
                machine = "serve-a" if (i // 10) % 2 == 0 else "serve-b"
                _predict(ports[machine], texts[i:i + 10])
                sent[machine] += 10
            deadline = time.monotonic() + 60
            while sum(_health(p).get("logged", 0) for p in ports.values()) < sum(sent.values()):
                assert time.monotonic() < deadline, [_health(p) for p in ports.values()]
                time.sleep(0.5)

            subprocess.run([sys.executable, "-m", "prefect", "deployment", "run", "monitoring-flow/graft-monitoring"],
                           env=env("cpu-machine"), check=True, capture_output=True, timeout=120)
            runs = _wait(api, lambda rs: sum(r["flow"] == "training-flow" for r in rs) == 2
                         and all(r["state_type"] in FINAL for r in rs), "monitoring, then the training it triggers")
        finally:
            for p in procs:
                p.terminate()
            for p in procs:
                p.wait(timeout=60)
    states: dict[str, int] = {}
    for r in runs:
        states[f"{r['flow']}: {r['state_type']}"] = states.get(f"{r['flow']}: {r['state_type']}", 0) + 1
    assert states == {"ingest-flow: COMPLETED": 1, "training-flow: COMPLETED": 2, "monitoring-flow: COMPLETED": 1}, runs
    assert {r["flow"]: r["work_pool_name"] for r in runs} == {"ingest-flow": "graft-cpu", "monitoring-flow": "graft-cpu",
                                                               "training-flow": "graft-gpu"}
    drift = Store(store["monitor"]).read_json("drift.json")
    assert Store(store["monitor"]).exists("report.html") and Store(store["cache"]).names()  # shared, on S3
    written = sum(sent.values())
    assert drift["current_records"] == written and drift["decision"] == "drift" and drift["trigger"], drift
    print(f"\nthe loop across machines: {time.perf_counter() - start:.0f} s; flow runs {states}; records written "
          f"{written}, read by monitoring {drift['current_records']}; seconds to switch after promotion {seconds}")
