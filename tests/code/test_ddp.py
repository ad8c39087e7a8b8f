"""DDP: two CPU processes (gloo, launched by torchrun) train like one process, on one node and
as two nodes that meet through a c10d rendezvous on loopback; one torchrun process sets up the
group too and trains exactly like one process alone."""

import json
import socket
import subprocess
import sys
import textwrap

import pytest
from conftest import REPO, colour_images

SCRIPT = textwrap.dedent("""
    import json, sys
    from pathlib import Path
    from pipeline.core.config import parse_params
    from pipeline.data.prepare import prepare_data
    from pipeline.model.train import train_model
    data, weights, out = map(Path, sys.argv[1:4])
    p = parse_params({"data": {"path": str(data)}, "validate": {"labels": ["blue", "red"]},
                      "train": {"epochs": 3, "batch_size": 16, "lr": 3e-4, "head_lr": 3e-3, "augment": False,
                                "warmup_epochs": 0.5},
                      "paths": {"cache": str(out / "cache")}})
    m = prepare_data(data, p.data, p.prepare).manifest
    r = train_model(m, ["blue", "red"], data, {"chosen": {"name": "test_efficientnet", "weights": str(weights)},
                    "strategy": "full"}, p, out)
    import torch.distributed as td
    rank, backend = (td.get_rank(), td.get_backend()) if td.is_initialized() else (0, "")
    (out / f"result{rank}.json").write_text(json.dumps({"val": r.val, "test": r.test, "history": r.history,
                                                        "backend": backend}))
""")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


ENV = {"PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin"}


def _run(cmd: list[str], out) -> subprocess.Popen:
    out.mkdir(exist_ok=True)
    return subprocess.Popen(cmd, cwd=REPO, stdout=open(out / "stdout.log", "w"), stderr=subprocess.STDOUT,
                            text=True, env=ENV)


def _check(proc: subprocess.Popen, out) -> None:
    assert proc.wait(timeout=500) == 0, (out / "stdout.log").read_text()[-4000:]


def _results(*files):
    rs = [json.loads(f.read_text()) for f in files]
    for r in rs:  # an epoch's wall time is each process's own clock
        assert all(h.pop("seconds") >= 0 for h in r["history"])
    return rs


def _matches_one_process(r: dict, one: dict) -> None:
    assert len(r["history"]) == len(one["history"]) == 3
    assert r["val"]["loss"] == pytest.approx(one["val"]["loss"], abs=0.05)
    assert r["val"]["accuracy"] == pytest.approx(one["val"]["accuracy"], abs=0.1)
    for a, b in zip(one["history"], r["history"], strict=True):  # the same global batch, other shuffles
        assert a["train_loss"] == pytest.approx(b["train_loss"], abs=0.1)


@pytest.mark.timeout(900)
def test_two_gloo_processes_match_one_process_on_one_node_and_on_two(tmp_path, tiny_timm_dir):
    data = colour_images(tmp_path / "imgs", per_class=30)
    script = tmp_path / "run.py"
    script.write_text(SCRIPT)
    args = [str(script), str(data), str(tiny_timm_dir)]
    single, ddp = tmp_path / "single", tmp_path / "ddp"
    _check(_run([sys.executable, *args, str(single)], single), single)
    _check(_run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", f"--master_port={_free_port()}",
                 "--master_addr=127.0.0.1", *args, str(ddp)], ddp), ddp)
    (one,) = _results(single / "result0.json")
    assert one.pop("backend") == ""  # not launched by torchrun: no process group

    # torchrun with one process still sets up the group (NCCL on a GPU; gloo here) and DDP
    solo = tmp_path / "solo"
    _check(_run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=1", f"--master_port={_free_port()}",
                 "--master_addr=127.0.0.1", *args, str(solo)], solo), solo)
    (r,) = _results(solo / "result0.json")
    assert r.pop("backend") == "gloo"
    assert r == one  # one process in a group of one trains exactly like one process alone
    r0, r1 = _results(ddp / "result0.json", ddp / "result1.json")
    assert r0.pop("backend") == r1.pop("backend") == "gloo"
    assert r0 == r1  # both processes end with the same model and decisions
    _matches_one_process(r0, one)
    assert (ddp / "model" / "model.safetensors").exists() and not (ddp / "result2.json").exists()

    # two nodes of one process each: two torchrun launchers that find each other through a c10d
    # rendezvous on loopback, each writing into its own folder as on its own machine
    endpoint = f"127.0.0.1:{_free_port()}"
    nodes = [tmp_path / f"node{i}" for i in (0, 1)]
    launchers = [_run([sys.executable, "-m", "torch.distributed.run", "--nnodes=2", "--nproc_per_node=1",
                       f"--node_rank={i}", "--rdzv_backend=c10d", f"--rdzv_endpoint={endpoint}", "--rdzv_id=graft-test",
                       *args, str(node)], node) for i, node in enumerate(nodes)]
    for proc, node in zip(launchers, nodes, strict=True):
        _check(proc, node)
    results = sorted(f for node in nodes for f in node.glob("result*.json"))
    assert [f.name for f in results] == ["result0.json", "result1.json"]  # one rank on each node
    a, b = _results(*results)
    assert a.pop("backend") == b.pop("backend") == "gloo"
    assert a == b  # identical val and test losses to the last bit: identical weights on both nodes
    _matches_one_process(a, one)
    assert sum((node / "model" / "model.safetensors").exists() for node in nodes) == 1  # rank 0 alone saves
