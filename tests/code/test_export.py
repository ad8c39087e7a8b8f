"""export: ONNX with logits and embedding, parity with PyTorch, latency, int8."""

import json
import re
from pathlib import Path

import numpy as np
import onnx
import pytest
from conftest import tiny_task
from PIL import Image

from pipeline.core.artifacts import Workspace
from pipeline.core.config import parse_params
from pipeline.data.prepare import prepare_data
from pipeline.model.export import ExportParityError, run_export
from pipeline.model.quantize import Int8NotShipped, int8_path, judge, settle
from pipeline.model.train import train_model
from pipeline.model.trained import load_trained
from pipeline.production.predictor import Predictor
from pipeline.production.runtime import cuda_device_count, ort_session


def _trained(tmp_path, modality, weights, train=None, **export):
    data, labels, name = tiny_task(tmp_path, modality)
    p = parse_params({"data": {"path": str(data)}, "validate": {"labels": labels},
                      "train": {"epochs": 1, "batch_size": 16, "max_length": 16, **(train or {})},
                      "export": {"latency_runs": 3, **export}, "paths": {"cache": str(tmp_path / "cache")}})
    manifest = prepare_data(data, p.data, p.prepare).manifest
    (tmp_path / "val").mkdir()
    manifest.to_parquet(tmp_path / "val" / "manifest.parquet")
    train_model(manifest, labels, data, {"chosen": {"name": name, "weights": str(weights)}, "strategy": "partial"},
                p, tmp_path / "train")
    return p


def _ws(p, tmp_path):
    return Workspace.from_params(p, train=tmp_path / "train", validate=tmp_path / "val", export=tmp_path / "exp")


@pytest.mark.parametrize("modality", ["image", "text"])
def test_export_matches_pytorch(tmp_path, tiny_timm_dir, tiny_bert_dir, modality):
    p = _trained(tmp_path, modality, tiny_timm_dir if modality == "image" else tiny_bert_dir)
    r = run_export(p, _ws(p, tmp_path))
    assert r.passed and r.parity.top1_agreement == 1.0 and r.parity.max_abs_diff_logits < 1e-4
    assert r.parity.examples == 12 if modality == "image" else r.parity.examples > 0
    for key in ("torch_b1", "onnx_b1", "torch_b32", "onnx_b32", "onnx_int8_b1"):
        assert r.latency_ms[key]["p50"] > 0 and r.latency_ms[key]["p95"] >= r.latency_ms[key]["p50"]
        assert 3 <= r.latency_ms[key]["runs"] <= 3 and r.latency_ms[key]["iqr"] >= 0
    model = onnx.load(str(r.onnx_path))
    meta = {m.key: json.loads(m.value) for m in model.metadata_props}
    assert meta["graft.labels"] == (["blue", "red"] if modality == "image" else ["ham", "spam"])
    assert [o.name for o in model.graph.output] == ["logits", "embedding"]
    session, provider = ort_session(r.onnx_path)
    assert provider == ("CUDAExecutionProvider" if cuda_device_count() else "CPUExecutionProvider")
    # a dynamic batch axis: batch 3 runs although the export example had another size
    _clf, info, view = load_trained(tmp_path / "train" / "model")
    if modality == "image":
        feeds = {"input": np.random.default_rng(0).standard_normal((3, 3, 32, 32)).astype(np.float32)}
        dim = info["dim"]
    else:
        enc = view.tokenizer(["free prize", "hello see you later", "ok"], padding=True, return_tensors="np")
        feeds = {"input_ids": enc["input_ids"].astype(np.int64), "attention_mask": enc["attention_mask"].astype(np.int64)}
        dim = 32
        assert (tmp_path / "exp" / "model" / "tokenizer").is_dir()
    logits, emb = session.run(["logits", "embedding"], feeds)
    assert logits.shape == (3, 2) and emb.shape == (3, dim)
    assert json.loads((tmp_path / "exp" / "export.json").read_text())["passed"]
    # int8: static QDQ for the convolutional model, dynamic for the transformer; shipped or not,
    # the decision is recorded beside the model and agrees with what is on disk
    q = json.loads((tmp_path / "exp" / "model" / "quantization.json").read_text())
    assert q["method"].startswith("static QDQ" if modality == "image" else "dynamic")
    assert (q["calibration_examples"] > 0) == (modality == "image")
    assert q == {k: v for k, v in r.int8.items() if k != "parity"}
    assert (tmp_path / "exp" / "model" / "model.int8.onnx").exists() == q["shipped"] == (not q["reasons"])
    if q["shipped"]:
        assert Predictor(tmp_path / "exp" / "model", variant="int8").predict(
            [Image.new("RGB", (40, 40), "red")] if modality == "image" else ["free prize"]).labels
    else:
        with pytest.raises(Int8NotShipped, match=re.escape(q["reasons"][0])):
            Predictor(tmp_path / "exp" / "model", variant="int8")


def _report(ep, **measured):
    figures = {"accuracy_fp32": 0.95, "accuracy_int8": 0.95, "agreement": 1.0, "speedup_b1": 2.0, **measured}
    return judge(ep, "static QDQ", Path("/nonexistent/model.int8.onnx"), figures["accuracy_fp32"],
                 figures["accuracy_int8"], figures["agreement"], figures["speedup_b1"], 64)


@pytest.mark.parametrize(("measured", "key"), [
    ({"accuracy_int8": 0.61}, "int8_max_accuracy_drop"),  # MobileNetV2 under dynamic int8: 34 points lost
    ({"agreement": 0.985}, "int8_min_agreement"),
    ({"speedup_b1": 0.9}, "int8_min_speedup"),
])
def test_an_int8_model_that_loses_accuracy_or_speed_is_not_shipped(tmp_path, measured, key):
    ep = parse_params({}).export
    assert _report(ep).shipped and not _report(ep).reasons
    report = _report(ep, **measured)
    assert not report.shipped and len(report.reasons) == 1 and f"export.{key}=" in report.reasons[0]
    (tmp_path / "model.int8.onnx").write_bytes(b"int8")
    settle(report, tmp_path)
    assert not (tmp_path / "model.int8.onnx").exists()
    with pytest.raises(Int8NotShipped, match=f"export.{key}=.*serve.model: fp32"):
        int8_path(tmp_path)


def test_test_time_augmentation_is_inside_the_exported_model(tmp_path, tiny_timm_dir):
    p = _trained(tmp_path, "image", tiny_timm_dir, train={"tta": "hflip"}, quantize=False)
    clf, info, _view = load_trained(tmp_path / "train" / "model")
    assert info["tta"] == "hflip" and info["tta_choice"]["reason"] == "train.tta=hflip" and clf.flip_tta
    r = run_export(p, _ws(p, tmp_path))
    assert r.passed and r.parity.top1_agreement == 1.0 and r.parity.max_abs_diff_logits < 1e-4
    session, _ = ort_session(r.onnx_path)
    x = np.random.default_rng(0).standard_normal((2, 3, 32, 32)).astype(np.float32)
    logits, emb = session.run(None, {"input": x})
    mirrored, mirrored_emb = session.run(None, {"input": x[..., ::-1].copy()})
    # the served model sees both views: an image and its mirror get the same answer
    np.testing.assert_allclose(logits, mirrored, atol=1e-5)
    np.testing.assert_allclose(emb, mirrored_emb, atol=1e-5)
    clf.flip_tta = False
    import torch

    with torch.no_grad():
        one_view = clf(torch.from_numpy(x)).numpy()
    assert np.abs(one_view - logits).max() > 1e-4  # and it is not the one-view model


def test_parity_beyond_the_bound_fails_the_export_with_a_report(tmp_path, tiny_timm_dir):
    p = _trained(tmp_path, "image", tiny_timm_dir, max_abs_diff=1e-12, quantize=False)
    with pytest.raises(ExportParityError, match=r"export\.max_abs_diff=1e-12"):
        run_export(p, _ws(p, tmp_path))
    assert not json.loads((tmp_path / "exp" / "export.json").read_text())["passed"]


def test_a_gpu_whose_cuda_provider_cannot_start_runs_on_the_cpu_with_a_warning(tmp_path, monkeypatch, caplog):
    from onnx import TensorProto, helper

    from pipeline.production import runtime

    if cuda_device_count():
        pytest.skip("a real GPU is here: tests/gpu checks that its CUDA provider starts")
    io = [helper.make_tensor_value_info(n, TensorProto.FLOAT, [None, 3]) for n in ("input", "y")]
    graph = helper.make_graph([helper.make_node("Relu", ["input"], ["y"])], "relu", io[:1], io[1:])
    path = tmp_path / "relu.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)], ir_version=10), str(path))
    monkeypatch.setattr(runtime, "cuda_device_count", lambda: 1)  # a driver that reports a GPU; no GPU to run on
    with caplog.at_level("WARNING", logger="graft.runtime"):
        session, provider = runtime.ort_session(path)
    assert provider == "CPUExecutionProvider"
    assert session.run(None, {"input": np.array([[-1.0, 0.0, 2.0]], np.float32)})[0].tolist() == [[0.0, 0.0, 2.0]]
    assert "relu.onnx: the CUDA driver reports a GPU but onnxruntime's CUDA provider did not start" in caplog.text
    assert "graft[serve-gpu]" in caplog.text
