"""graft score and graft monitor from the command line, as a user runs them."""

from pathlib import Path

import pandas as pd
from conftest import shifted_texts
from typer.testing import CliRunner

from graft.cli import app
from pipeline.production.prodlog import read_log

runner = CliRunner()


def test_score_a_text_file_writes_predictions_and_logs_them(workspace):
    pd.DataFrame({"text": ["free cash prize now", "see you at lunch", *shifted_texts(3)]}).to_csv("in.csv", index=False)
    r = runner.invoke(app, ["score", "in.csv", "-o", "preds.parquet"])
    assert r.exit_code == 0, r.output
    preds = pd.read_parquet("preds.parquet")
    assert list(preds.columns) == ["input", "pred", "confidence", "p_ham", "p_spam"]
    assert list(preds["pred"][:2]) == ["spam", "ham"] and list(preds["input"][:2]) == ["in.csv:1", "in.csv:2"]
    log = read_log("production/log")
    assert len(log) == 5 and (log["oov_share"][2:] == 1.0).all()
    assert "scored 5 inputs with v0001" in r.output


def test_score_says_what_is_wrong_with_the_input(workspace):
    pd.DataFrame({"message": ["hi"]}).to_csv("bad.csv", index=False)
    r = runner.invoke(app, ["score", "bad.csv"])
    assert r.exit_code == 2 and "bad.csv has no column 'text'" in r.output and "data.text_column" in r.output
    r = runner.invoke(app, ["score", "missing.csv"])
    assert r.exit_code == 2 and "missing.csv does not exist" in r.output
    r = runner.invoke(app, ["score", "bad.csv", "-o", "out.xlsx"])
    assert r.exit_code == 2 and ".csv or .parquet" in r.output
    assert read_log("production/log").empty


def test_monitor_command_prints_the_decision(workspace):
    r = runner.invoke(app, ["monitor"])
    assert r.exit_code == 0 and "insufficient_data" in r.output
    pd.DataFrame({"text": shifted_texts(30)}).to_csv("drifted.csv", index=False)
    assert runner.invoke(app, ["score", "drifted.csv", "-o", "p.csv"]).exit_code == 0
    r = runner.invoke(app, ["monitor"])
    assert r.exit_code == 0 and "drift" in r.output and "retraining triggered" in r.output
    assert "report: outputs/monitor/report.html" in r.output.replace("\n", "")


def test_ingest_command_merges_a_batch_and_rejects_another(workspace):
    with open("data/t.csv", "a") as f:  # a malformed row someone has yet to fix: kept byte for byte
        f.write("a row,with,three fields\n")
    before = Path("data/t.csv").read_text()
    pd.DataFrame({"text": ["free cash prize now"] * 4, "label": ["spam"] * 4}).to_csv("good.csv", index=False)
    Path("data/inbox").mkdir(parents=True)
    pd.DataFrame({"text": ["hello"] * 4, "label": ["eggs"] * 4}).to_csv("data/inbox/bad.csv", index=False)
    r = runner.invoke(app, ["ingest", "good.csv"])
    assert r.exit_code == 0 and "good.csv: merged" in r.output and "graft run" in r.output
    after = Path("data/t.csv").read_text()
    assert after.startswith(before) and after[len(before):] == "free cash prize now,spam\n" * 4
    r = runner.invoke(app, ["ingest"])
    assert r.exit_code == 0 and "bad.csv: rejected" in r.output and "eggs" in r.output
    assert Path("data/inbox/rejected/bad.csv").exists()
    assert runner.invoke(app, ["ingest"]).output.startswith("nothing to ingest")


def test_ingest_from_an_inbox_on_s3_merges_and_moves_the_batches_there(workspace, s3_bucket):
    import fsspec

    inbox = f"{s3_bucket}/inbox"
    fs = fsspec.filesystem("s3")
    fs.pipe_file(f"{inbox.removeprefix('s3://')}/good.csv", b"text,label\nfree cash prize now,spam\nsee you at lunch,ham\n")
    fs.pipe_file(f"{inbox.removeprefix('s3://')}/bad.csv", b"text,label\nhello,eggs\n")
    before = Path("data/t.csv").read_text()
    r = runner.invoke(app, ["ingest", "--set", f"paths.inbox={inbox}"])
    assert r.exit_code == 0, r.output
    assert "good.csv: merged" in r.output and "bad.csv: rejected" in r.output and "eggs" in r.output
    assert Path("data/t.csv").read_text() == before + "free cash prize now,spam\nsee you at lunch,ham\n"
    fs.invalidate_cache()
    left = sorted(p.rsplit("/", 1)[-1] for p in fs.find(inbox.removeprefix("s3://")))
    assert "good.csv" in left and "bad.csv" in left and "ingest.json" in left  # under processed/ and rejected/
    assert fs.exists(f"{inbox.removeprefix('s3://')}/processed/good.csv")
    assert fs.exists(f"{inbox.removeprefix('s3://')}/rejected/bad.csv.report/ingest.json")
    assert not fs.exists(f"{inbox.removeprefix('s3://')}/good.csv")
    assert runner.invoke(app, ["ingest", "--set", f"paths.inbox={inbox}"]).output.startswith("nothing to ingest")


def test_score_skips_and_names_what_is_not_a_text_and_scores_the_rest(workspace):
    import json

    lines = [{"text": "free cash prize now"}, {"text": 42}, {"text": ["a", "list"]}, {"text": " \u00a0 "},
             {"text": None}, {"text": "see you at lunch"}]
    Path("in.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines) + "[1, 2]\n")
    r = runner.invoke(app, ["score", "in.jsonl", "-o", "preds.csv"])
    assert r.exit_code == 0, r.output
    preds = pd.read_csv("preds.csv")
    assert list(preds["input"]) == ["in.jsonl:1", "in.jsonl:6"] and list(preds["pred"]) == ["spam", "ham"]
    log = read_log("production/log")
    assert len(log) == 2  # nothing but the two texts reaches the model or the production log
    for row, why in [(2, "text is a number"), (3, "text is a list"), (4, "has no visible character"),
                     (5, "text is a null"), (7, "line 7 is a JSON list, not an object")]:
        assert f"in.jsonl:{row}" in r.output and why in r.output, (row, r.output)


def test_a_dataset_it_cannot_write_rejects_the_batch_naming_the_folder(workspace, monkeypatch):
    import pipeline.data.ingest as ingest_mod

    def read_only(path, *_a, **_k):
        raise PermissionError(13, "Permission denied", str(path))

    monkeypatch.setattr(ingest_mod, "append_rows", read_only)
    before = Path("data/t.csv").read_text()
    Path("data/inbox").mkdir(parents=True)
    pd.DataFrame({"text": ["free cash prize now"] * 4, "label": ["spam"] * 4}).to_csv("data/inbox/b.csv", index=False)
    r = runner.invoke(app, ["ingest"])
    assert r.exit_code == 0 and "b.csv: rejected" in r.output and "cannot write into data/t.csv" in r.output
    assert Path("data/inbox/rejected/b.csv").exists() and Path("data/t.csv").read_text() == before
