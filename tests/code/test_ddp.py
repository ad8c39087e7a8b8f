"""DDP: two CPU processes (gloo, launched by torchrun) train like one process."""

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
    rank = td.get_rank() if td.is_initialized() else 0
    (out / f"result{rank}.json").write_text(json.dumps({"val": r.val, "history": r.history}))
""")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.timeout(600)
def test_two_gloo_processes_match_one_process(tmp_path, tiny_timm_dir):
    data = colour_images(tmp_path / "imgs", per_class=30)
    script = tmp_path / "run.py"
    script.write_text(SCRIPT)
    env_cmd = [sys.executable]
    single, ddp = tmp_path / "single", tmp_path / "ddp"
    for out, launcher in ((single, []), (ddp, ["-m", "torch.distributed.run", "--nproc_per_node=2",
                                                f"--master_port={_free_port()}", "--master_addr=127.0.0.1"])):
        out.mkdir()
        proc = subprocess.run([*env_cmd, *launcher, str(script), str(data), str(tiny_timm_dir), str(out)],
                              cwd=REPO, capture_output=True, text=True, timeout=500,
                              env={"PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1",
                                   "PATH": "/usr/bin:/bin"})
        assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    one = json.loads((single / "result0.json").read_text())
    r0, r1 = (json.loads((ddp / f"result{i}.json").read_text()) for i in (0, 1))
    for r in (r0, r1):  # an epoch's wall time is each process's own clock
        assert all(h.pop("seconds") >= 0 for h in r["history"])
    assert r0 == r1  # both processes end with the same model and decisions
    assert len(r0["history"]) == len(one["history"]) == 3
    assert r0["val"]["loss"] == pytest.approx(one["val"]["loss"], abs=0.05)
    assert r0["val"]["accuracy"] == pytest.approx(one["val"]["accuracy"], abs=0.1)
    for a, b in zip(one["history"], r0["history"], strict=True):  # the same global batch, other shuffles
        assert a["train_loss"] == pytest.approx(b["train_loss"], abs=0.1)
    assert (ddp / "model" / "model.safetensors").exists() and not (ddp / "result2.json").exists()
