"""The production log: hourly Parquet parts, flushed by count and by time, safe for concurrent writers."""

import multiprocessing as mp
import subprocess
import sys
import textwrap
import threading
import time
from datetime import datetime, timedelta, timezone

import numpy as np
from conftest import REPO

from pipeline.core.storage import Store
from pipeline.production.prodlog import ProductionLog, read_log


def _records(n, tag="a"):
    return [{"model_version": "v0001", "source": f"{tag}{i}", "length": float(i), "pred": "ham",
             "confidence": 0.9, "embedding": np.full(4, i, dtype=np.float32)} for i in range(n)]


def test_records_are_flushed_every_n_and_read_back_in_order(tmp_path):
    log = ProductionLog(tmp_path / "log", flush_records=10, flush_seconds=3600)
    log.append(_records(9))
    assert read_log(tmp_path / "log").empty  # buffered: fewer than flush_records
    log.append(_records(1, "b"))
    frame = read_log(tmp_path / "log")
    assert len(frame) == 10 and list(frame["source"][:3]) == ["a0", "a1", "a2"]
    assert np.allclose(frame["embedding"].iloc[5], np.full(4, 5.0))
    parts = list((tmp_path / "log").glob("date=*/hour=*/part-*.parquet"))
    now = datetime.now(timezone.utc)
    assert len(parts) == 1 and parts[0].parent.name in (f"hour={now:%H}", f"hour={now - timedelta(minutes=1):%H}")
    log.close()


def test_a_background_thread_flushes_after_flush_seconds(tmp_path):
    log = ProductionLog(tmp_path / "log", flush_records=1000, flush_seconds=0.2)
    log.append(_records(3))
    deadline = time.monotonic() + 10
    while read_log(tmp_path / "log").empty and time.monotonic() < deadline:
        time.sleep(0.05)
    assert len(read_log(tmp_path / "log")) == 3
    log.close()


def test_close_flushes_what_is_buffered(tmp_path):
    with ProductionLog(tmp_path / "log", flush_records=1000, flush_seconds=3600) as log:
        log.append(_records(7))
    assert len(read_log(tmp_path / "log")) == 7


def _writer(root, tag, n):
    with ProductionLog(root, flush_records=3, flush_seconds=0.01) as log:
        for i in range(n):
            log.append(_records(1, f"{tag}-{i}-"))


def test_concurrent_threads_and_processes_lose_nothing(tmp_path):
    root = tmp_path / "log"
    threads = [threading.Thread(target=_writer, args=(root, f"t{k}", 40)) for k in range(4)]
    procs = [mp.get_context("spawn").Process(target=_writer, args=(root, f"p{k}", 40)) for k in range(2)]
    for w in [*threads, *procs]:
        w.start()
    for w in [*threads, *procs]:
        w.join(timeout=120)
    frame = read_log(root)
    assert len(frame) == 6 * 40 and frame["source"].nunique() == 6 * 40
    assert not list(root.rglob(".*.tmp"))  # no half-written part left behind


def test_windows_by_hours_and_by_count(tmp_path):
    with ProductionLog(tmp_path / "log", flush_records=1) as log:
        log.append(_records(5))
    later = datetime.now(timezone.utc) + timedelta(hours=3)
    assert read_log(tmp_path / "log", hours=1, now=later).empty
    assert len(read_log(tmp_path / "log", hours=4, now=later)) == 5
    assert list(read_log(tmp_path / "log", last=2)["source"]) == ["a3", "a4"]


WRITER = textwrap.dedent("""
    import sys
    from pipeline.production.prodlog import ProductionLog
    root, n, tag = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    with ProductionLog(root, flush_records=7, flush_seconds=60) as log:
        for i in range(n):
            log.append([{"model_version": "v0001", "source": f"{tag}-{i}", "pred": "a", "confidence": 0.9,
                         "embedding": [0.0, 1.0]}])
""")


def test_writers_on_two_machines_share_one_s3_prefix_without_losing_a_record(s3_bucket):
    root = f"{s3_bucket}/production/log"
    writers = [subprocess.Popen([sys.executable, "-c", WRITER, root, "50", tag], cwd=REPO) for tag in ("a", "b")]
    assert [w.wait(timeout=120) for w in writers] == [0, 0]
    frame = read_log(root)
    assert len(frame) == 100 and frame["source"].nunique() == 100
    parts = Store(root).glob("date=*/hour=*/part-*.parquet")
    assert len(parts) == len(set(parts)) >= 2 * 8  # 50 records in parts of 7: 8 immutable parts per writer


def test_an_input_the_storage_cannot_keep_still_gets_its_hash(tmp_path, monkeypatch, caplog):
    import hashlib

    from pipeline.production.prodlog import input_identity, kept_input

    log = ProductionLog(tmp_path / "log")
    assert input_identity(b"png bytes", ".PNG", log, keep=True) == {"input_sha256": hashlib.sha256(b"png bytes").hexdigest()}
    assert kept_input(tmp_path / "log", hashlib.sha256(b"png bytes").hexdigest())[0].endswith(".png")

    def full(*_a, **_k):
        raise OSError("No space left on device")

    monkeypatch.setattr(log.store, "put", full)
    assert input_identity(b"other", ".jpg", log, keep=True) == {"input_sha256": hashlib.sha256(b"other").hexdigest()}
    assert "could not keep an input" in caplog.text and "No space left" in caplog.text
    assert kept_input(tmp_path / "log", hashlib.sha256(b"other").hexdigest()) is None
    log.close()


def test_a_broken_part_or_an_odd_folder_is_named_and_set_aside_the_rest_is_read(tmp_path, caplog):
    import pandas as pd

    log = ProductionLog(tmp_path / "log", flush_records=5, flush_seconds=3600)
    log.append(_records(5))
    log.close()
    hour_dir = next((tmp_path / "log").glob("date=*/hour=*"))
    (hour_dir / "part-truncated.parquet").write_bytes(b"PAR1\x00\x01")
    (hour_dir / "part-random.parquet").write_bytes(np.random.default_rng(0).bytes(500))
    pd.DataFrame({"x": [1, 2]}).to_parquet(hour_dir / "part-schema.parquet")
    odd = tmp_path / "log" / "date=yesterday" / "hour=noon"
    odd.mkdir(parents=True)
    (odd / "part-0.parquet").write_bytes((next(hour_dir.glob("part-*.parquet"))).read_bytes())
    for hours in (None, 24.0):
        with caplog.at_level("WARNING"):
            frame = read_log(tmp_path / "log", hours=hours)
        assert len(frame) == 5 and list(frame["source"]) == [f"a{i}" for i in range(5)]
        skipped = dict(frame.attrs["skipped_parts"])
        assert {k.rsplit("/", 1)[-1] for k in skipped} == {"part-truncated.parquet", "part-random.parquet",
                                                           "part-schema.parquet", "part-0.parquet"}
        assert "date=YYYY-MM-DD/hour=HH" in skipped["date=yesterday/hour=noon/part-0.parquet"]
    assert "part-truncated.parquet" in caplog.text


def test_retention_prunes_old_parts_and_inputs_and_caps_the_kept_bytes(tmp_path):
    import os

    from pipeline.production.retention import prune_log

    log = ProductionLog(tmp_path / "log", flush_records=5, flush_seconds=3600)
    log.append(_records(5))
    digests = [log.keep_input(bytes([i]) * 1000, ".png") for i in range(4)]
    log.close()
    part = next((tmp_path / "log").glob("date=*/hour=*/part-*.parquet"))
    old = tmp_path / "log" / "date=2020-01-01" / "hour=00"
    old.mkdir(parents=True)
    (old / "part-old.parquet").write_bytes(part.read_bytes())
    kept = sorted((tmp_path / "log" / "inputs").rglob("*.png"))
    ancient = time.time() - 40 * 86400
    for i, f in enumerate(kept):  # two of them 40 days old
        if f.name.startswith((digests[0], digests[1])):
            os.utime(f, (ancient + i, ancient + i))
    pruned = prune_log(str(tmp_path / "log"), keep_days=30, max_inputs_mb=0)
    assert pruned.parts == 1 and pruned.inputs == 2 and pruned.bytes == 2000
    assert len(read_log(tmp_path / "log")) == 5  # this hour's part stays
    assert len(list((tmp_path / "log" / "inputs").rglob("*.png"))) == 2
    capped = prune_log(str(tmp_path / "log"), keep_days=0, max_inputs_mb=1500 / 2**20)
    assert capped.inputs == 1 and len(list((tmp_path / "log" / "inputs").rglob("*.png"))) == 1
    assert prune_log(str(tmp_path / "log"), keep_days=0, max_inputs_mb=0).to_dict() == {"parts": 0, "inputs": 0,
                                                                                          "bytes": 0}
