"""The registry: atomic versions and champion pointer, lock, kill -9, promotion through the gate."""

import json
import os
import random
import signal
import subprocess
import sys
import textwrap
import time

import pytest
from conftest import REPO, colour_images

from pipeline.release.registry import Registry, RegistryBusy, RegistryError


def _version(reg, tmp_path, status="blessed", tag="a"):
    src = tmp_path / f"src-{tag}"
    (src / "model").mkdir(parents=True, exist_ok=True)
    (src / "model" / "model.safetensors").write_bytes(tag.encode() * 1000)
    return reg.register({"model": src / "model"}, status, {"model": tag}, f"# card {tag}\n")


def test_register_promote_rollback(tmp_path):
    reg = Registry(tmp_path / "registry")
    with reg.lock():
        v1 = _version(reg, tmp_path, tag="a")
        reg.promote(v1.name)
        v2 = _version(reg, tmp_path, tag="b")
        reg.promote(v2.name)
        v3 = _version(reg, tmp_path, status="rejected", tag="c")
        with pytest.raises(RegistryError, match=r"v0003 is rejected; only a blessed version becomes champion"):
            reg.promote(v3.name)
        assert [v.name for v in reg.list()] == ["v0001", "v0002", "v0003"] and reg.champion() == "v0002"
        assert reg.rollback() == "v0001" and reg.champion() == "v0001"
        with pytest.raises(RegistryError, match="nothing to roll back to"):
            reg.rollback()
        with pytest.raises(RegistryError, match=r"no model version 'v0009'.*v0001, v0002, v0003"):
            reg.get("v0009")
    assert (reg.local("v0001") / "card.md").read_text() == "# card a\n"
    assert json.loads((tmp_path / "registry" / "champion.json").read_text())["version"] == "v0001"


def test_a_second_process_is_refused_while_the_lock_is_held(tmp_path):
    root = tmp_path / "registry"
    holder = subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""
        import time
        from pipeline.release.registry import Registry
        with Registry({str(root)!r}).lock():
            print("locked", flush=True)
            time.sleep(30)
    """)], cwd=REPO, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(RegistryBusy, match=rf"another graft run \(pid {holder.pid}\)"), Registry(root).lock():
            pass
    finally:
        holder.kill()
        holder.wait()
    with Registry(root).lock():  # free again once the holder is gone
        pass


KILL_LOOP = textwrap.dedent("""
    import sys
    from pathlib import Path
    from pipeline.release.registry import Registry
    root, src = Path(sys.argv[1]), Path(sys.argv[2])
    reg = Registry(root)
    with reg.lock():
        while True:
            v = reg.register({"model": src}, "blessed", {}, "card")
            reg.promote(v.name)
            print(v.name, flush=True)
""")


def test_kill_9_at_any_moment_leaves_the_registry_consistent(tmp_path):
    root, src = tmp_path / "registry", tmp_path / "src"
    src.mkdir()
    for i in range(20):  # enough bytes that copies take a moment
        (src / f"w{i}.bin").write_bytes(os.urandom(200_000))
    rng = random.Random(0)
    for _ in range(8):
        proc = subprocess.Popen([sys.executable, "-c", KILL_LOOP, str(root), str(src)], cwd=REPO,
                                stdout=subprocess.DEVNULL)
        time.sleep(rng.uniform(0.8, 2.0))
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        reg = Registry(root)
        with reg.lock():  # the lock is free again
            versions = reg.list()
            for v in versions:  # every visible version is complete
                assert len(list((reg.local(v.name) / "model").iterdir())) == 20 and v.status == "blessed"
            champion = reg.champion()
            if champion is not None:
                assert champion in {v.name for v in versions}
    assert len(Registry(root).list()) > 0


def test_a_worse_challenger_is_rejected_and_the_champion_stays(tmp_path, tiny_timm_dir):
    from pipeline.core.artifacts import Workspace
    from pipeline.core.config import parse_params
    from pipeline.data.prepare import prepare_data
    from pipeline.model.evaluate import run_evaluate
    from pipeline.model.export import run_export
    from pipeline.model.train import train_model
    from pipeline.release.gate import run_gate

    data = colour_images(tmp_path / "imgs", per_class=40)
    p = parse_params({"data": {"path": str(data)}, "validate": {"labels": ["blue", "red"]},
                      "train": {"epochs": 1},
                      "export": {"latency_runs": 3, "quantize": False},
                      "gate": {"bounds": {"macro_f1": {"min": 0.0}, "accuracy": None, "ece": None}, "change": {"macro_f1": {"min_abs": 0.0}}},
                      "paths": {"cache": str(tmp_path / "cache"), "registry": str(tmp_path / "registry")}})
    manifest = prepare_data(data, p.data, p.prepare).manifest

    def cycle(name, frame):
        d = tmp_path / name
        (d / "val").mkdir(parents=True)
        frame.to_parquet(d / "val" / "manifest.parquet")
        train_model(frame, ["blue", "red"], data, {"chosen": {"name": "test_efficientnet",
                                                              "weights": str(tiny_timm_dir)},
                                                   "strategy": "linear_probe"}, p, d / "train")
        ws = Workspace.from_params(p, validate=d / "val", train=d / "train", evaluate=d / "ev", export=d / "ex",
                                   gate=d / "gate")
        run_evaluate(p, ws)
        run_export(p, ws)
        return run_gate(p, ws).to_dict()

    first = cycle("good", manifest)
    assert first["status"] == "blessed" and first["promoted"] and first["champion"] == "v0001"
    # A permutation of the labels still leaves this easy task separable (seen: test macro-F1 1.0,
    # only the loss worse), so the worse model is trained with the two classes swapped.
    swapped = manifest.copy()
    train = swapped["split"] == "train"
    swapped.loc[train, "label"] = swapped.loc[train, "label"].map({"blue": "red", "red": "blue"})
    second = cycle("swapped", swapped)
    assert second["status"] == "rejected" and not second["promoted"], (first["test_metrics"], second["test_metrics"], second["gate"])
    assert second["champion"] == "v0001" and second["version"] == "v0002"
    assert any(r.startswith("change.macro_f1.abs") for r in second["gate"]["reasons"])
    reg = Registry(tmp_path / "registry")
    assert reg.get("v0002").status == "rejected"
    saved_gate = json.loads((reg.local("v0002") / "gate.json").read_text())
    assert saved_gate["status"] == "rejected" and saved_gate["champion"] == "v0001"
    card = (reg.local("v0002") / "card.md").read_text()
    assert card.startswith("# Model card: v0002") and "Compared with champion: v0001" in card
    assert "**Status:** rejected" in card and "| change.macro_f1.abs |" in card and "**fail**" in card
    assert "- Shipped weights: the probe (C=" in card and "refitted on train + val" in card
    assert "- Calibration: temperature " in card and "val ECE " in card
    assert "## int8\nnot produced (export.quantize is off)" in card


def test_the_card_says_whether_val_vouched_for_the_fine_tune():
    from pipeline.release.card import _training_lines

    gain = {"gain": 0.05, "interval": [-0.01, 0.11], "confidence": 0.9, "significant": False}
    lines = _training_lines({"gain_over_probe": gain})
    assert "macro-F1 +0.0500, 90% paired-bootstrap interval [-0.0100, +0.1100]: within val's noise" in lines
    assert "the fine-tune ships" in _training_lines({"gain_over_probe": {**gain, "interval": [0.01, 0.09],
                                                                          "significant": True}})
    assert _training_lines({"gain_over_probe": {}}) == ""  # the probe was the strategy: nothing to compare
    tta = {"tta": "hflip", "gain": 0.031, "reason": "val vouches for the mirrored view's gain"}
    assert "- Test-time augmentation: hflip (the mirrored view's val macro-F1 gain +0.0310; val vouches" in \
        _training_lines({"tta_choice": tta})


# ---------------------------------------------------------------- on object storage (S3)


def test_a_registry_on_s3_registers_promotes_and_serves_files_from_a_local_copy(s3_bucket, tmp_path, monkeypatch):
    monkeypatch.setenv("GRAFT_CACHE_DIR", str(tmp_path / "cache"))
    reg = Registry(f"{s3_bucket}/registry")
    with reg.lock():
        v1 = _version(reg, tmp_path, tag="a")
        reg.promote(v1.name)
        v2 = _version(reg, tmp_path, tag="b")
        reg.promote(v2.name)
    other = Registry(f"{s3_bucket}/registry")  # another machine's view
    assert other.champion() == "v0002" and [v.name for v in other.list()] == ["v0001", "v0002"]
    assert v2.path == f"{s3_bucket}/registry/versions/v0002"
    local = other.local("v0001")
    assert local.is_relative_to(tmp_path / "cache") and (local / "card.md").read_text() == "# card a\n"
    assert (local / "model" / "model.safetensors").read_bytes() == b"a" * 1000
    assert other.rollback() == "v0001" and reg.champion() == "v0001"


def test_a_pointer_move_made_from_a_stale_view_is_refused(s3_bucket, tmp_path):
    from pipeline.release.registry import RegistryConflict

    reg = Registry(f"{s3_bucket}/registry")
    v1, v2 = _version(reg, tmp_path, tag="a"), _version(reg, tmp_path, tag="b")
    reg.promote(v1.name)
    seen = reg._pointer()  # a writer reads the pointer ...
    Registry(f"{s3_bucket}/registry").promote(v2.name)  # ... another promotes first
    with pytest.raises(RegistryConflict, match="moved while this change was being made"):
        reg._move(seen, v1.name, [])
    assert reg.champion() == "v0002"


def test_a_version_name_claimed_elsewhere_is_skipped(s3_bucket, tmp_path):
    reg = Registry(f"{s3_bucket}/registry")
    assert reg.store.create(b"another writer", "versions", "v0001", ".claim")
    assert _version(reg, tmp_path).name == "v0002"
    assert [v.name for v in reg.list()] == ["v0002"]  # the claimed, unfinished v0001 is invisible


def test_the_s3_lock_names_its_holder_and_a_stale_one_is_taken_over(s3_bucket, monkeypatch):
    import pipeline.release.registry as registry

    url = f"{s3_bucket}/registry"
    holder = subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""
        import time
        from pipeline.release.registry import Registry
        with Registry({url!r}).lock():
            print("locked", flush=True)
            time.sleep(60)
    """)], cwd=REPO, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(RegistryBusy, match=rf"host .*, pid {holder.pid}, for 0.0 h\) is using s3://"), \
                Registry(url).lock():
            pass
    finally:
        holder.kill()  # dies holding the lock: nothing deletes it
        holder.wait()
    with pytest.raises(RegistryBusy, match=r"delete s3://.*/registry/\.lock if that process is gone"), Registry(url).lock():
        pass
    monkeypatch.setattr(registry, "STALE_LOCK_HOURS", 0.0)  # as if it had died long ago
    with Registry(url).lock():
        pass
    assert not Registry(url).store.exists(".lock")
