"""train: every strategy learns, resume reproduces, the saved model rebuilds."""

import json

import numpy as np
import pytest
import torch
from conftest import tiny_task
from safetensors.torch import load_file

from pipeline.core.artifacts import Workspace
from pipeline.core.config import parse_params
from pipeline.data.prepare import prepare_data
from pipeline.model.backbones import rebuild_classifier
from pipeline.model.features import embed_frame
from pipeline.model.inference import softmax
from pipeline.model.metrics import expected_calibration_error, fit_temperature
from pipeline.model.probe import WeightedCrossEntropy, probe_grid, refit_probe_head
from pipeline.model.train import run_train, train_model
from pipeline.model.trained import load_trained


class Stop(Exception):
    pass


def _setup(tmp_path, modality, weights, **train):
    data, labels, name = tiny_task(tmp_path, modality)
    p = parse_params({"data": {"path": str(data)}, "validate": {"labels": labels},
                      "train": {"epochs": 3, "batch_size": 8, "lr": 3e-4, "head_lr": 3e-3,
                                "warmup_epochs": 0.5, "max_length": 16, "patience": 5, **train},
                      "paths": {"cache": str(tmp_path / "cache")}})
    manifest = prepare_data(data, p.data, p.prepare).manifest
    return manifest, labels, data, {"chosen": {"name": name, "weights": str(weights)}}, p


def _train(tmp_path, modality, weights, strategy, out="out", resume=False, log=None, **train):
    manifest, labels, root, decision, p = _setup(tmp_path, modality, weights, **train)
    return train_model(manifest, labels, root, {**decision, "strategy": strategy}, p, tmp_path / out,
                       resume=resume, log=log)


@pytest.mark.parametrize("strategy", ["linear_probe", "partial", "full", "gradual_unfreeze"])
def test_image_strategies_learn(tmp_path, tiny_timm_dir, strategy):
    r = _train(tmp_path, "image", tiny_timm_dir, strategy)
    assert r.val["macro_f1"] >= 0.8 and r.test["macro_f1"] >= 0.8
    if strategy == "linear_probe":  # one row per (C, weighting): weaker regularisation fits train closer
        assert [(h["C"], h["class_weighting"]) for h in r.history] == [
            (c, w) for w in (True, False) for c in (0.01, 0.1, 1.0, 10.0)]
        for w in (True, False):
            losses = [h["train_loss"] for h in r.history if h["class_weighting"] == w]
            assert losses == sorted(losses, reverse=True), losses
    else:  # the last epoch's weights moved away from the pretrained ones in the top group
        before = load_file(str(tiny_timm_dir / "model.safetensors"))
        last = load_file(str(tmp_path / "out" / "checkpoints" / "last.safetensors"))
        assert not torch.equal(last["backbone.conv_head.weight"], before["conv_head.weight"])
    if strategy == "gradual_unfreeze":
        assert [h["trainable_groups"] for h in r.history] == [0, 1, 2]
    if strategy == "partial":
        assert {h["trainable_groups"] for h in r.history} == {2}


@pytest.mark.parametrize("strategy", ["full", "lora"])
def test_text_strategies_learn(tmp_path, tiny_bert_dir, strategy):
    r = _train(tmp_path, "text", tiny_bert_dir, strategy, epochs=6, lr=1e-3, head_lr=1e-2)
    losses = [h["train_loss"] for h in r.history]
    assert losses[-1] < losses[0], losses
    assert r.test["macro_f1"] >= 0.8
    saved = load_file(str(r.model_dir / "model.safetensors"))
    assert not any("lora" in k for k in saved)  # adapters merged into plain weights


def test_mixup_and_cutmix_train(tmp_path, tiny_timm_dir):
    # 41 training images: an odd last batch that timm's Mixup would refuse
    r = _train(tmp_path, "image", tiny_timm_dir, "full", mixup=0.2, cutmix=0.2, batch_size=6)
    assert len(r.history) == 3 and all(np.isfinite(h["train_loss"]) for h in r.history)
    assert r.val["macro_f1"] >= 0.8


def test_lora_on_a_timm_vit(tmp_path, tiny_vit_dir):
    r = _train(tmp_path, "image", tiny_vit_dir, "lora")
    assert r.history[-1]["train_loss"] < r.history[0]["train_loss"]


def test_frozen_layers_keep_their_weights(tmp_path, tiny_timm_dir):
    r = _train(tmp_path, "image", tiny_timm_dir, "partial", partial_groups=1)
    before = load_file(str(tiny_timm_dir / "model.safetensors"))
    after = load_file(str(r.model_dir / "model.safetensors"))
    assert torch.equal(after["backbone.conv_stem.weight"], before["conv_stem.weight"])
    assert torch.equal(after["backbone.bn1.running_mean"], before["bn1.running_mean"])  # BN kept in eval
    assert not torch.equal(after["head.weight"], torch.zeros_like(after["head.weight"]))


def test_resume_after_a_killed_epoch_reproduces_the_uninterrupted_run(tmp_path, tiny_timm_dir):
    full = _train(tmp_path, "image", tiny_timm_dir, "full", out="a", epochs=4)

    def die_after_second_epoch(epoch, row):
        if epoch == 1:
            raise Stop

    with pytest.raises(Stop):
        _train(tmp_path, "image", tiny_timm_dir, "full", out="b", epochs=4, log=die_after_second_epoch)
    resumed = _train(tmp_path, "image", tiny_timm_dir, "full", out="b", epochs=4, resume=True)
    # the kill came after epoch 2's log, before its checkpoint: epoch 2 is redone
    assert [h["epoch"] for h in resumed.history] == [0, 1, 2, 3]
    for a, b in zip(full.history, resumed.history, strict=True):
        assert a["train_loss"] == pytest.approx(b["train_loss"], rel=1e-5)
        assert a["val_loss"] == pytest.approx(b["val_loss"], rel=1e-5)
    wa = load_file(str(full.model_dir / "model.safetensors"))
    wb = load_file(str(resumed.model_dir / "model.safetensors"))
    assert all(torch.allclose(wa[k].float(), wb[k].float(), atol=1e-6) for k in wa)


def test_a_fine_tune_worse_than_its_probe_ships_the_probe(tmp_path, tiny_timm_dir):
    wrecked = _train(tmp_path, "image", tiny_timm_dir, "full", out="wrecked", lr=5.0, grad_clip=0.0)
    probe = _train(tmp_path, "image", tiny_timm_dir, "linear_probe", out="probe")
    assert wrecked.best_epoch == -1 and wrecked.val == wrecked.probe_val
    a = load_file(str(wrecked.model_dir / "model.safetensors"))
    b = load_file(str(probe.model_dir / "model.safetensors"))
    assert [k for k in b if not torch.allclose(a[k], b[k])] == []  # exactly the probe-initialised model


def test_scratch_candidates_are_reproducible(tiny_timm_dir):
    from pipeline.model.backbones import load_backbone

    a = load_backbone("test_efficientnet", None, "image", pretrained=False)
    b = load_backbone("test_efficientnet", None, "image", pretrained=False)
    assert a.name == "test_efficientnet (scratch)" and a.fingerprint() == b.fingerprint()


def test_saved_model_rebuilds_and_predicts_the_same(tmp_path, tiny_timm_dir):
    r = _train(tmp_path, "image", tiny_timm_dir, "partial")
    info = json.loads((r.model_dir / "model.json").read_text())
    assert info["labels"] == ["blue", "red"] and info["strategy"] == "partial"
    clf, _ = rebuild_classifier(r.model_dir, info, info["num_classes"])
    clf.load_state_dict(load_file(str(r.model_dir / "model.safetensors")))
    x = torch.randn(2, 3, 32, 32)
    clf.eval()
    assert clf(x).shape == (2, 2)


def test_run_train_needs_select_first(tmp_path):
    from pipeline.core.errors import GraftError

    (tmp_path / "val").mkdir()
    with pytest.raises(GraftError, match="run `graft validate` first"):
        p = parse_params({})
        run_train(p, Workspace.from_params(p, validate=tmp_path / "nothing", select=tmp_path / "sel", train=tmp_path / "out"))


def test_class_weighting_weights_examples_not_the_smoothing_term():
    logits = torch.tensor([[2.0, 0.0], [0.0, 2.0], [2.0, 0.0]])
    y = torch.tensor([0, 1, 0])
    w = torch.tensor([0.5, 2.0])
    per = torch.nn.functional.cross_entropy(logits, y, reduction="none", label_smoothing=0.1)
    expected = (per * w[y]).sum() / w[y].sum()
    assert torch.isclose(WeightedCrossEntropy(w, 0.1)(logits, y), expected)
    # with equal weights it is the plain mean
    assert torch.isclose(WeightedCrossEntropy(torch.ones(2), 0.1)(logits, y), per.mean())
    assert np.isfinite(float(WeightedCrossEntropy(None, 0.0)(logits, y)))


def test_temperature_scaling_undoes_overconfidence():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, 4000)
    x = rng.normal(size=(4000, 3)) + 2.0 * np.eye(3)[y]  # unit Gaussians around 2 * one-hot
    calibrated = 2.0 * x  # their exact log-posteriors (up to a constant): softmax is calibrated
    over = calibrated * 4.0
    t = fit_temperature(over, y)
    assert 3.0 < t < 5.5
    assert expected_calibration_error(softmax(over / t), y, 15)[0] < expected_calibration_error(softmax(over), y, 15)[0] / 3
    assert fit_temperature(calibrated, y) == pytest.approx(1.0, abs=0.2)
    right = np.eye(3)[y] * 3.0  # every prediction right: no error to calibrate against, T stays 1
    assert fit_temperature(right, y) == 1.0


def test_the_shipped_probe_is_refitted_on_train_and_val_and_calibrated(tmp_path, tiny_timm_dir):
    r = _train(tmp_path, "image", tiny_timm_dir, "linear_probe")
    info = json.loads((r.model_dir / "model.json").read_text())
    assert "refitted on train + val" in r.refit and info["refit"] == r.refit
    cal = r.calibration
    assert cal["temperature"] > 0 and cal["val_ece_after"] <= cal["val_ece_before"] + 1e-9
    # the shipped head is the train+val logistic regression at the C val chose, divided by T
    manifest, labels, root, _decision, p = _setup(tmp_path, "image", tiny_timm_dir)
    clf, _info, view = load_trained(r.model_dir)
    fit = manifest[manifest["split"].isin(["train", "val"])]
    x = embed_frame(view, fit, root, tmp_path / "cache")
    assert all("cv_macro_f1" in h for h in r.history)  # a small val: C chosen by cross-validation
    c, weighted = probe_grid(p.train)[r.best_epoch]
    assert r.history[r.best_epoch]["cv_macro_f1"] == max(h["cv_macro_f1"] for h in r.history)
    expected = refit_probe_head(x, fit["label"].map(labels.index).to_numpy(), len(labels), c, weighted, p.train)
    assert torch.allclose(clf.head.weight * cal["temperature"], expected.weight, atol=1e-5)


def _val_logits(y, right, n=2):
    """One-hot logits that classify the rows in `right` correctly and the others wrongly."""
    pred = np.where(right, y, (y + 1) % n)
    return np.eye(n)[pred]


def test_a_fine_tune_ships_only_with_a_gain_val_can_vouch_for():
    from pipeline.model.metrics import vouched_gain

    tp = parse_params({}).train
    rng = np.random.default_rng(0)
    # 143 val rows (clothing's val split): the probe right on 80%, a lucky epoch on 7 rows more
    y = rng.integers(0, 2, 143)
    probe_right = rng.random(143) < 0.8
    lucky = probe_right.copy()
    lucky[np.flatnonzero(~probe_right)[:14]] = True
    lucky[np.flatnonzero(probe_right)[:7]] = False
    small = vouched_gain(y, _val_logits(y, lucky), _val_logits(y, probe_right), 2, tp.gain_confidence, 0)
    assert small["gain"] > tp.min_gain and not small["significant"] and small["interval"][0] <= 0
    # the same 5-point gain on 2,000 val rows is not luck
    y = rng.integers(0, 2, 2000)
    probe_right = rng.random(2000) < 0.8
    better = probe_right | (rng.random(2000) < 0.25)
    large = vouched_gain(y, _val_logits(y, better), _val_logits(y, probe_right), 2, tp.gain_confidence, 0)
    assert large["significant"] and large["interval"][0] > 0 and large["val_examples"] == 2000
    off = vouched_gain(y[:143], _val_logits(y[:143], lucky), _val_logits(y[:143], probe_right[:143]), 2, 0.0, 0)
    assert off["significant"] and off["interval"] is None


def test_an_unvouched_fine_tune_restores_the_probe_model(tmp_path, tiny_timm_dir, monkeypatch):
    import pipeline.model.finetune as finetune

    # every epoch beats the probe (min_gain 0 and a patched bar), then val cannot vouch for it
    monkeypatch.setattr(finetune, "better", lambda new, old: True)
    monkeypatch.setattr(finetune, "vouched_gain", lambda *a: {"gain": 0.01, "interval": [-0.02, 0.04],
                                                                 "significant": False})
    tuned = _train(tmp_path, "image", tiny_timm_dir, "full", out="tuned", min_gain=0.0)
    probe = _train(tmp_path, "image", tiny_timm_dir, "linear_probe", out="probe")
    assert tuned.best_epoch == -1 and tuned.val == tuned.probe_val and "train.gain_confidence" in tuned.stopped
    assert tuned.gain["significant"] is False
    a = load_file(str(tuned.model_dir / "model.safetensors"))
    b = load_file(str(probe.model_dir / "model.safetensors"))
    assert [k for k in b if not torch.allclose(a[k], b[k])] == []



def test_test_time_augmentation_ships_only_when_val_vouches_for_it(tmp_path, tiny_timm_dir, monkeypatch):
    import pipeline.model.train as train

    r = _train(tmp_path, "image", tiny_timm_dir, "linear_probe", out="auto")
    choice = r.tta  # the tiny task's val is already right everywhere: nothing for a mirror to add
    assert choice["tta"] == "none" and choice["gain"] <= 0 and "does not vouch" in choice["reason"]
    assert json.loads((r.model_dir / "model.json").read_text())["tta"] == "none"
    monkeypatch.setattr(train, "vouched_gain", lambda *a: {"gain": 0.02, "interval": [0.01, 0.03],
                                                           "significant": True})
    vouched = _train(tmp_path, "image", tiny_timm_dir, "linear_probe", out="vouched")
    assert vouched.tta["tta"] == "hflip"
    clf, info, _ = load_trained(vouched.model_dir)
    assert info["tta"] == "hflip" and clf.flip_tta
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():  # the logits are the mean of both views' logits (the head is linear)
        both = clf(x)
        clf.flip_tta = False
        mean = (clf(x) + clf(torch.flip(x, dims=[-1]))) / 2
    torch.testing.assert_close(both, mean, atol=1e-5, rtol=1e-5)


def test_autocast_is_bf16_where_the_gpu_has_it_else_fp16_with_a_scaler_and_none_on_the_cpu(monkeypatch):
    from pipeline.model.device import autocast_dtype

    assert autocast_dtype(torch.device("cpu")) is None  # the CPU trains in float32
    gpu = torch.device("cuda", 0)  # a device object only: nothing runs on it
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: not including_emulation)
    assert autocast_dtype(gpu) is torch.bfloat16  # native bf16 (Ampere and newer), not emulated
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: including_emulation)
    assert autocast_dtype(gpu) is torch.float16  # only emulated bf16 (V100, T4): fp16 + GradScaler
