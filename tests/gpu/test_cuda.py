"""The CUDA paths on a real GPU: `.venv/bin/python -m pytest -m gpu tests/gpu` (never part of the
default suite, whose addopts deselect the marker). Every test skips where torch sees no GPU."""

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch
from conftest import REPO, colour_images, tiny_task

from pipeline.core.artifacts import Workspace
from pipeline.core.config import parse_params
from pipeline.data.prepare import prepare_data
from pipeline.model import finetune
from pipeline.model.backbones import load_backbone
from pipeline.model.device import autocast_dtype
from pipeline.model.export import run_export
from pipeline.model.features import embed_frame
from pipeline.model.train import train_model
from pipeline.model.trained import load_trained

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")]
CUDA = torch.device("cuda")


def _params(tmp_path, data, labels, **train):
    return parse_params({"data": {"path": str(data)}, "validate": {"labels": labels},
                         "train": {"device": "cuda", "epochs": 2, "batch_size": 16, "max_length": 16, **train},
                         "export": {"latency_runs": 3, "quantize": False},
                         "paths": {"cache": str(tmp_path / "cache")}})


def _train(tmp_path, modality, weights, strategy="full", **train):
    data, labels, name = tiny_task(tmp_path, modality)
    p = _params(tmp_path, data, labels, **train)
    manifest = prepare_data(data, p.data, p.prepare).manifest
    (tmp_path / "val").mkdir(exist_ok=True)
    manifest.to_parquet(tmp_path / "val" / "manifest.parquet")
    r = train_model(manifest, labels, data, {"chosen": {"name": name, "weights": str(weights)}, "strategy": strategy},
                    p, tmp_path / "train")
    return p, r


def test_the_autocast_dtype_is_the_gpus_native_one():
    major, _ = torch.cuda.get_device_capability()
    assert autocast_dtype(CUDA) == (torch.bfloat16 if major >= 8 else torch.float16)


@pytest.mark.parametrize("modality", ["image", "text"])
def test_fine_tuning_runs_on_the_gpu_under_autocast_and_channels_last(tmp_path, tiny_timm_dir, tiny_bert_dir,
                                                                       modality, monkeypatch):
    seen = []
    real = finetune._train_epoch

    def spy(clf, *args, **kwargs):  # the first layer of every training step: where and how it ran
        first = next(m for m in clf.modules() if isinstance(m, torch.nn.Conv2d | torch.nn.Linear))
        hook = first.register_forward_hook(lambda m, i, o: seen.append(
            (i[0].device.type, m.weight.device.type, o.dtype,
             i[0].ndim != 4 or i[0].is_contiguous(memory_format=torch.channels_last))))
        try:
            return real(clf, *args, **kwargs)
        finally:
            hook.remove()

    monkeypatch.setattr(finetune, "_train_epoch", spy)
    _p, r = _train(tmp_path, modality, tiny_timm_dir if modality == "image" else tiny_bert_dir)
    assert len(seen) >= 2 * 3  # two epochs of at least three batches
    assert set(seen) == {("cuda", "cuda", autocast_dtype(CUDA), True)}  # images: channels-last input
    assert r.epochs_run == 2 and np.isfinite(r.val["loss"]) and r.test["accuracy"] >= 0.8
    clf, _info, _view = load_trained(tmp_path / "train" / "model")  # saved from the CPU, rebuilt on the CPU
    assert {p.device.type for p in clf.parameters()} == {"cpu"}


def test_frozen_embeddings_on_the_gpu_match_the_cpu_and_the_backbone_goes_back(tmp_path, tiny_timm_dir):
    data = colour_images(tmp_path / "imgs", per_class=20)
    p = parse_params({"data": {"path": str(data)}})
    frame = prepare_data(data, p.data, p.prepare).manifest
    backbone = load_backbone("test_efficientnet", str(tiny_timm_dir), "image")
    cpu = embed_frame(backbone, frame, data, tmp_path / "cpu")
    gpu = embed_frame(backbone, frame, data, tmp_path / "gpu", device=CUDA)
    assert {p.device.type for p in backbone.module.parameters()} == {"cpu"}
    assert np.abs(gpu - cpu).max() <= 1e-2 * max(1.0, float(np.abs(cpu).max()))  # TF32 convolutions


def test_export_and_the_torch_free_predictor_use_the_cuda_provider_with_cpu_parity(tmp_path, tiny_timm_dir):
    p, _r = _train(tmp_path, "image", tiny_timm_dir, strategy="partial", epochs=1)
    result = run_export(p, Workspace.from_params(p, train=tmp_path / "train", validate=tmp_path / "val",
                                                 export=tmp_path / "exp"))
    assert result.passed and result.provider == "CUDAExecutionProvider", result.reasons
    model = tmp_path / "exp" / "model"
    # serve and score import no torch: onnxruntime must find the CUDA libraries by itself
    code = textwrap.dedent(f"""
        import json, sys
        import numpy as np
        import onnxruntime as ort
        from pipeline.production.predictor import Predictor
        p = Predictor({str(model)!r})
        x = np.random.default_rng(0).standard_normal((32, 3, 32, 32)).astype(np.float32)
        cpu = ort.InferenceSession({str(model / "model.onnx")!r}, providers=["CPUExecutionProvider"])
        a, b = p.session.run(["logits"], {{"input": x}})[0], cpu.run(["logits"], {{"input": x}})[0]
        print(json.dumps({{"provider": p.provider, "torch": "torch" in sys.modules,
                          "diff": float(np.abs(a - b).max()), "scale": float(np.abs(b).max()),
                          "top1": float((a.argmax(1) == b.argmax(1)).mean())}}))
    """)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, cwd=REPO,
                          env={**os.environ, "PYTHONPATH": str(REPO)})
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["provider"] == "CUDAExecutionProvider" and not out["torch"], out
    assert out["top1"] == 1.0 and out["diff"] <= 1e-2 * max(1.0, out["scale"]), out


def test_torchrun_with_one_process_trains_through_nccl(tmp_path, tiny_timm_dir):
    data = colour_images(tmp_path / "imgs", per_class=30)
    script = tmp_path / "run.py"
    script.write_text(textwrap.dedent(f"""
        import json
        from pathlib import Path
        import torch.distributed as td
        from pipeline.core.config import parse_params
        from pipeline.data.prepare import prepare_data
        from pipeline.model.train import train_model
        p = parse_params({{"data": {{"path": {str(data)!r}}}, "validate": {{"labels": ["blue", "red"]}},
                          "train": {{"device": "cuda", "epochs": 2, "batch_size": 16}},
                          "paths": {{"cache": {str(tmp_path / "cache")!r}}}}})
        m = prepare_data(Path({str(data)!r}), p.data, p.prepare).manifest
        r = train_model(m, ["blue", "red"], Path({str(data)!r}),
                        {{"chosen": {{"name": "test_efficientnet", "weights": {str(tiny_timm_dir)!r}}},
                          "strategy": "full"}}, p, Path({str(tmp_path / "out")!r}))
        print(json.dumps({{"backend": td.get_backend(), "world": td.get_world_size(), "epochs": r.epochs_run,
                          "loss": r.val["loss"]}}))
    """))
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=1",
                           str(script)],
                          capture_output=True, text=True, timeout=600, cwd=REPO,
                          env={**os.environ, "PYTHONPATH": str(REPO)})
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
    out = json.loads(next(line for line in reversed(proc.stdout.splitlines()) if line.startswith("{")))
    assert out["backend"] == "nccl" and out["world"] == 1 and out["epochs"] == 2 and np.isfinite(out["loss"])
