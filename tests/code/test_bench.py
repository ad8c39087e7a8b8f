"""The benchmark harness: a small drift run writes its record, and the table is rebuilt from records."""

import json

import bench.common as common
import bench.run as bench_run


def test_a_small_drift_benchmark_and_the_generated_table(tmp_path, monkeypatch):
    monkeypatch.setattr(common, "RESULTS", tmp_path)
    monkeypatch.setattr(bench_run, "RESULTS", tmp_path)
    from bench import drift

    r = drift.run(rows=3000, reference_rows=1000, dim=16)
    saved = json.loads((tmp_path / "drift.json").read_text())
    assert saved["baseline_value"] > 0 and saved["ours_value"] > 0 and saved["machine"]["cores"] >= 1
    assert abs(saved["ratio"] - saved["baseline_value"] / saved["ours_value"]) < 0.01 * saved["ratio"] + 1e-3
    assert set(r["details"]["drifted_columns"]) >= {"f0", "f1", "f2"}  # the shifted features are found
    (tmp_path / "broken.json").write_text(json.dumps({"id": "broken", "benchmark": "9. broken", "error": "OSError: x"}))
    text = bench_run.table()
    assert "| 4. Drift monitoring, 3,000 records" in text and "**error**: OSError: x" in text
    assert "do not edit by hand" in text
