"""train: fine-tune the selected backbone with the selected strategy, then calibrate it.

Every strategy starts from a linear probe on cached frozen features (LP-FT): a logistic
regression whose C is chosen on val, so tuning the backbone does not start by undoing a random
head. `linear_probe` stops there; the others then train backbone groups (`partial`, `full`,
`gradual_unfreeze`) or LoRA adapters (`lora`) in pipeline.model.finetune, and an epoch ships only
when it beats the probe on val by a gain val can vouch for (a Bonferroni-corrected paired
bootstrap). For images, test-time augmentation (the mirror averaged in) ships when val vouches
for it by the same rule.

Every labelled example is used: when the probe ships, it is refitted on train + val with the C
val chose (the test split stays untouched). A fine-tuned backbone keeps val for choosing its
epoch. Then temperature scaling, fitted on val, is folded into the head, so the exported logits
give calibrated probabilities; the val ECE before and after is in metrics.json and the card.
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from pipeline.core.artifacts import (
    CHECKPOINTS,
    HISTORY,
    LEADERBOARD,
    MODEL,
    SPLITS,
    TRAIN_METRICS,
    Workspace,
    require,
)
from pipeline.core.config import save_resolved
from pipeline.core.errors import GraftError
from pipeline.core.io import write_json_atomic
from pipeline.core.params import Params, TrainParams
from pipeline.modalities.registry import get_modality
from pipeline.model.audit import LABEL_ISSUES
from pipeline.model.backbones import Classifier, load_backbone, save_backbone_config
from pipeline.model.device import resolve_device
from pipeline.model.distributed import init_distributed
from pipeline.model.features import embed_frame
from pipeline.model.finetune import fine_tune, save_weights, seed_everything
from pipeline.model.inference import softmax
from pipeline.model.loaders import make_loader
from pipeline.model.metrics import (
    classification_metrics,
    expected_calibration_error,
    fit_temperature,
    predict_logits,
    vouched_gain,
)
from pipeline.model.probe import EpochLog, fit_probe_head, probe_grid, refit_probe_head
from pipeline.model.trained import dataset_labels, encode_labels, load_validated

logger = logging.getLogger("graft.train")


@dataclass(frozen=True)
class TrainResult:
    model_dir: Path
    strategy: str
    best_epoch: int
    epochs_run: int
    history: list[dict[str, float]]
    val: dict[str, float]
    test: dict[str, float]
    probe_val: dict[str, float]
    seconds: float
    calibration: dict[str, float]
    refit: str
    stopped: str
    gain: dict[str, Any]
    tta: dict[str, Any]


# ---------------------------------------------------------------- stage


def train_model(manifest: pd.DataFrame, labels: list[str], root: Path, decision: dict[str, Any],
                params: Params, out: Path, resume: bool = False, log: EpochLog | None = None) -> TrainResult:
    """Core: train on the manifest's train split, select on val, report val and test metrics."""
    start = time.perf_counter()
    tp = params.train
    device = resolve_device(tp.device)  # before any work: a GPU asked for and missing is a params error
    init_distributed(tp.device)  # under torchrun, binds this process to its own GPU ("cuda" is that one)
    seed_everything(tp.seed)
    chosen = decision["chosen"]
    strategy = decision["strategy"]
    backbone = load_backbone(chosen.get("candidate") or chosen["name"], chosen["weights"],
                             str(manifest["modality"].iloc[0]), max_length=tp.max_length,
                             pretrained=chosen.get("pretrained", True), manifest=manifest)
    frames = {s: manifest[manifest["split"] == s].reset_index(drop=True) for s in SPLITS}
    for split, frame in frames.items():
        if frame.empty:
            raise GraftError(f"the {split} split is empty; validate should have stopped this run "
                             "(check validate.min_per_class)")
    targets = {s: encode_labels(f["label"], labels, f"the {s} split").tolist() for s, f in frames.items()}
    n = len(labels)
    cache = params.paths.cache

    def embedded(split: str) -> np.ndarray:  # frozen features, from the cache select filled
        return embed_frame(backbone, frames[split], root, cache, batch_size=tp.batch_size, device=device)

    feats = {s: embedded(s) for s in ("train", "val")}
    yv = np.array(targets["val"])
    head, probe_hist, probe_val, probe_best = fit_probe_head(feats["train"], np.array(targets["train"]), feats["val"],
                                                             yv, n, tp, log if strategy == "linear_probe" else None)
    clf = Classifier(backbone.module, backbone.dim, n)
    clf.head.load_state_dict(head.state_dict())
    c, weighted = probe_grid(tp)[probe_best]
    tp = tp.model_copy(update={"class_weighting": weighted})  # fine-tuning weights examples as the probe chose
    gain: dict[str, Any] = {}
    if strategy == "linear_probe":
        history, val, best_epoch = probe_hist, probe_val, probe_best
        stopped = f"linear probe: {len(probe_hist)} values of train.probe_c tried"
    else:
        with torch.no_grad():
            probe_val_logits = head(torch.from_numpy(feats["val"])).numpy()
        history, val, best_epoch, stopped, gain = fine_tune(clf, backbone, strategy, frames, targets, root, n, tp,
                                                            out, resume, log, probe_val, probe_val_logits)
    # the probe ships (linear_probe, or no fine-tuned epoch beat it): the backbone is the frozen one,
    # so its logits come from the cached features instead of another pass of the network
    frozen = strategy == "linear_probe" or best_epoch < 0

    def logits_of(split: str) -> tuple[np.ndarray, np.ndarray]:
        if frozen and not clf.flip_tta:
            x = torch.from_numpy(feats[split] if split in feats else embedded(split))
            with torch.no_grad():  # the head is on the fine-tuning device when a fine-tune was tried
                logits = clf.head(x.to(clf.head.weight.device)).cpu().numpy()
            return logits, np.array(targets[split])
        loader = make_loader(backbone, frames[split], targets[split], root, batch_size=tp.batch_size)
        on = clf.head.weight.device  # where the fine-tune left it (a linear probe never moved)
        return predict_logits(clf, loader, on)

    def mirrored_val_logits() -> np.ndarray:  # val through the network with both views
        clf.flip_tta = True
        try:
            return logits_of("val")[0]
        finally:
            clf.flip_tta = False

    val_logits = logits_of("val")[0]
    tta, tta_logits = _choose_tta(backbone.modality, tp, yv, val_logits, n, mirrored_val_logits)
    if tta_logits is not None:
        clf.flip_tta, val_logits = True, tta_logits
    calibration = _calibrate(clf, val_logits, yv, n, params.evaluate.ece_bins)
    refit = "none: the backbone was tuned on train, val chose the epoch and the temperature"
    if frozen:  # the probe ships: refit it on every labelled example
        head = refit_probe_head(np.vstack([feats["train"], feats["val"]]), np.r_[targets["train"], yv], n,
                                c, weighted, tp)
        clf.head.load_state_dict(head.state_dict())
        _scale_head(clf, calibration["temperature"])
        refit = (f"the probe (C={c:g}, class weighting {'on' if weighted else 'off'}, chosen "
                 f"{'by cross-validation' if 'cv_macro_f1' in probe_hist[0] else 'on val'}) refitted on train + val "
                 f"({len(yv) + len(targets['train'])} examples); temperature fitted on val before the refit")
    test_logits, yt = logits_of("test")
    test = classification_metrics(yt, test_logits, n)
    clf.cpu()
    model_dir = out / MODEL
    if init_distributed(tp.device).main:
        info = save_backbone_config(backbone, model_dir)
        save_weights(model_dir / "model.safetensors", clf)
        write_json_atomic(model_dir / "model.json", {**info, "labels": labels, "num_classes": n,
                                                     "strategy": strategy, "best_epoch": best_epoch,
                                                     "calibration": calibration, "refit": refit,
                                                     "gain_over_probe": gain, "tta": tta["tta"],
                                                     "tta_choice": tta})
    return TrainResult(model_dir, strategy, best_epoch, len(history), history, val, test, probe_val,
                       time.perf_counter() - start, calibration, refit, stopped, gain, tta)


def _choose_tta(modality: str, tp: TrainParams, yv: np.ndarray, plain: np.ndarray, n: int,
                mirrored: Callable[[], np.ndarray]) -> tuple[dict[str, Any], np.ndarray | None]:
    """train.tta for images: whether the model's val logits with the mirrored view averaged in
    (`mirrored()`, one more pass over val) ship (auto: when vouched_gain says val's macro-F1 gain
    is no luck). Returns the choice, and the val logits with TTA when it ships."""
    if not get_modality(modality).flip_tta:
        return {"tta": "none", "reason": f"{modality}: no cheap view that keeps the label"}, None
    if tp.tta == "off":
        return {"tta": "none", "reason": "train.tta=off"}, None
    flipped = mirrored()
    gain = vouched_gain(yv, flipped, plain, n, tp.gain_confidence, tp.seed)
    if tp.tta == "hflip":
        return {"tta": "hflip", "reason": "train.tta=hflip", **gain}, flipped
    ships = gain["significant"] and gain["gain"] > 0
    reason = ("val vouches for the mirrored view's gain (train.gain_confidence); inference runs the backbone twice"
              if ships else "val does not vouch for a gain from the mirrored view: one view, half the cost")
    logger.info("test-time augmentation: %s (val macro-F1 %+.4f)", "hflip" if ships else "none", gain["gain"])
    return {"tta": "hflip" if ships else "none", "reason": reason, **gain}, flipped if ships else None


def _scale_head(clf: Classifier, temperature: float) -> None:
    with torch.no_grad():
        clf.head.weight /= temperature
        clf.head.bias /= temperature


def _calibrate(clf: Classifier, val_logits: np.ndarray, yv: np.ndarray, n: int, bins: int) -> dict[str, float]:
    """Temperature scaling on val, folded into the head: the exported logits are calibrated."""
    t = fit_temperature(val_logits, yv)
    _scale_head(clf, t)
    before = expected_calibration_error(softmax(val_logits), yv, bins)[0]
    after = expected_calibration_error(softmax(val_logits / t), yv, bins)[0]
    return {"temperature": t, "val_ece_before": before, "val_ece_after": after}


def without_label_issues(manifest: pd.DataFrame, ws: Workspace, mode: str) -> tuple[pd.DataFrame, int]:
    """validate.label_issues=quarantine: the training rows select's label audit flagged are left out
    (val and test keep theirs: the gate compares every version on the same held-out labels)."""
    path = ws.select / LABEL_ISSUES
    if mode != "quarantine" or not path.exists():
        return manifest, 0
    flagged = pd.read_csv(path, dtype={"id": str})
    drop = (manifest["split"] == "train") & manifest["id"].astype(str).isin(flagged.loc[flagged["split"] == "train", "id"])
    if drop.any():
        logger.info("label audit: %d flagged training rows left out (validate.label_issues=quarantine)", int(drop.sum()))
    return manifest[~drop].reset_index(drop=True), int(drop.sum())


def run_train(params: Params, ws: Workspace, resume: bool = False, log: EpochLog | None = None) -> TrainResult:
    """Stage entry: read validate's manifest and select's decision; write model/ and metrics.json."""
    manifest = load_validated(ws.validate)
    decision = json.loads(require(ws.select / LEADERBOARD, "select").read_text(encoding="utf-8"))
    labels = dataset_labels(params.validate_.labels, manifest)
    if params.select.strategy != "auto":
        decision["strategy"] = params.select.strategy
    manifest, quarantined = without_label_issues(manifest, ws, params.validate_.label_issues)
    out = ws.train
    (out / CHECKPOINTS).mkdir(parents=True, exist_ok=True)  # a declared output, empty for linear_probe
    result = train_model(manifest, labels, ws.data, decision, params, out, resume, log)
    if not init_distributed(params.train.device).main:
        return result
    shipped = ("probe head on frozen features: no fine-tuned epoch beat it on val by a gain val can vouch for"
               if result.best_epoch < 0 and result.strategy != "linear_probe" else result.strategy)
    write_json_atomic(out / TRAIN_METRICS, {
        "strategy": result.strategy, "shipped": shipped, "best_epoch": result.best_epoch,
        "epochs_run": result.epochs_run,
        "val": result.val, "test": result.test, "probe_val": result.probe_val,
        "calibration": result.calibration, "refit": result.refit, "stopped": result.stopped,
        "gain_over_probe": result.gain, "tta": result.tta,
        "label_issues_quarantined": quarantined, "seconds": round(result.seconds, 1)})
    write_json_atomic(out / HISTORY, result.history)
    save_resolved(params, out, "train")
    if not math.isfinite(result.val["loss"]):
        raise GraftError("training diverged (validation loss is not finite); lower train.lr")
    return result
