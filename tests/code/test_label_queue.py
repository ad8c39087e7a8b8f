"""The label queue: uncertain first, then varied, never a near-duplicate; Label Studio files out,
a labelled Label Studio export (JSON or CSV) back in through ingest; bad exports refused clearly."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import spam_rows
from typer.testing import CliRunner

from flows.steps import ingest_all
from graft.cli import app
from pipeline.core.config import load_params
from pipeline.core.errors import DataError
from pipeline.data.labelstudio import to_batch
from pipeline.modalities.registry import get_modality
from pipeline.production.label_queue import choose, margins
from pipeline.production.predictor import Predictor, text_inputs
from pipeline.production.prodlog import ProductionLog, read_log
from pipeline.production.realised import load_labels
from pipeline.release.registry import champion_dir

runner = CliRunner()


def test_uncertain_rows_first_then_the_most_varied_without_near_duplicates():
    probs = np.array([[0.5, 0.5], [0.51, 0.49], [0.52, 0.48], [0.99, 0.01], [0.55, 0.45], [0.6, 0.4]])
    emb = np.array([[1, 0, 0], [1, 0, 0], [0, 1, 0], [0, 0, 1], [0.99, 0.01, 0], [0, 0.7, 0.7]], dtype=float)
    np.testing.assert_allclose(margins(probs), [0, 0.02, 0.04, 0.98, 0.1, 0.2], atol=1e-9)
    c = choose(probs, emb, n=3, pool_factor=5 / 3)  # the 5 least certain: rows 0, 1, 2, 4, 5
    assert 3 not in c.indices and len(set(c.indices) & {0, 1, 4}) == 1, c  # one of three near-identical rows
    assert set(c.indices) >= {2, 5} and c.pool == 5
    # what is like the labelled data is not asked again; duplicates end the queue early
    c = choose(probs, emb, n=5, labelled=np.array([[0, 1, 0.0]]), pool_factor=1)
    assert 2 not in c.indices and c.stopped_early and len(c.indices) == 2


def _log_texts(p, texts):
    name, d = champion_dir(p.paths.registry)
    pred = Predictor(d, name)
    with ProductionLog(p.paths.log) as log:
        log.append(pred.records(pred.predict(texts), inputs=text_inputs(texts)))


def _label(tasks: list[dict], truth: dict[str, str]) -> list[dict]:
    """What a labeller's Label Studio export looks like: each task with an annotation."""
    out = []
    for i, t in enumerate(tasks):
        choice = {"from_name": "label", "to_name": "text", "type": "choices",
                  "value": {"choices": [truth[t["data"]["text"]]]}}
        out.append({"id": i + 1, **t, "annotations": [{"id": i + 1, "was_cancelled": False, "result": [choice]}]})
    return out


def test_queue_to_label_studio_and_back_through_ingest(workspace):
    p = load_params("params.yaml")
    rows = spam_rows(per_class=50, seed=21)
    truth = dict(rows)
    _log_texts(p, [t for t, _ in rows])
    r = runner.invoke(app, ["label-queue", "-n", "6"])
    assert r.exit_code == 0, r.output
    queue = Path(p.paths.inbox) / "to-label"
    tasks = json.loads(next(queue.glob("queue-*.json")).read_text())
    table = pd.read_csv(next(queue.glob("queue-*.csv")))
    assert len(tasks) == len(table) == 6 and "label queue: 6 of" in r.output
    assert set(table["text"]) <= set(truth)
    logged = read_log(p.paths.log)
    all_margins = np.sort(margins(np.stack(logged["probs"].to_numpy())))
    assert table["margin"].max() <= all_margins[6 * 10 - 1] + 1e-4  # from the 60 least certain (pool_factor 10)
    pre = tasks[0]["predictions"][0]
    assert pre["model_version"] == "v0001" and pre["result"][0]["value"]["choices"][0] in ("ham", "spam")
    config = (queue / "label_config.xml").read_text()
    assert '<Choice value="ham"/>' in config and 'value="$text"' in config
    # the labeller's export, dropped into the inbox, is ingested like any batch
    (Path(p.paths.inbox) / "project-1-export.json").write_text(json.dumps(_label(tasks, truth)))
    before = len(pd.read_csv("data/t.csv"))
    [result] = ingest_all("params.yaml")
    assert result.accepted and result.merged == 6, result
    assert len(pd.read_csv("data/t.csv")) == before + 6
    assert set(load_labels(p.paths.monitor)["sha256"]) == {h["input_sha256"] for h in text_inputs(list(table["text"]))}
    # asked again, the queue leaves out what is labelled now
    r = runner.invoke(app, ["label-queue", "-n", "6"])
    again = pd.read_csv(sorted(queue.glob("queue-*.csv"))[-1]) if r.exit_code == 0 else None
    assert r.exit_code == 0 and not set(again["text"]) & set(table["text"]), r.output


def test_a_label_studio_csv_export_becomes_a_batch_in_the_datasets_columns(tmp_path):
    export = tmp_path / "export.csv"
    pd.DataFrame({"text": ["free prize", "see you", "unlabelled"], "graft_sha256": ["a", "b", "c"],
                  "label": ["spam", "ham", ""], "annotation_id": [1, 2, 3]}).to_csv(export, index=False)
    batch, skipped = to_batch(export, tmp_path, get_modality("text"), ["id", "message", "category"], "message", "category")
    assert skipped == 1
    assert pd.read_csv(batch).fillna("").to_dict(orient="list") == {
        "id": ["", ""], "message": ["free prize", "see you"], "category": ["spam", "ham"]}


@pytest.mark.parametrize(("tasks", "words"), [
    ([{"data": "x"}], "task 0 (id ?): 'data' is not an object"),
    ([{"id": 7, "data": {"text": "a"}, "annotations": [{"result": [{"value": {"choices": ["ham", "spam"]}}]}]}],
     "task 0 (id 7): 2 labels chosen (ham, spam)"),
    ([{"data": {"text": "a"}, "annotations": [{"was_cancelled": True, "result": []}]}], "no labelled task"),
    ([{"data": {"image": "images/gone.png"}, "annotations": [{"result": [{"value": {"choices": ["red"]}}]}]}],
     "its file (images/gone.png) is neither in the production log's kept inputs nor beside the export"),
    ([{"data": {"text": "a"}, "annotations": ["ham", "spam"]}], "task 0 (id ?): 'annotations' is not a list of objects"),
    ([{"data": {"text": "a"}, "annotations": [{"result": "ham"}]}], "'result' is not a list"),
    ([{"data": {"text": "a"}, "annotations": [{"result": [{"value": {"choices": [["ham"]]}}]}]}],
     "'choices' is not a list of labels"),
    ([{"id": 3, "data": {"text": {"nested": "x"}}, "annotations": [{"result": [{"value": {"choices": ["ham"]}}]}]}],
     "task 0 (id 3): data.text is a dict, not text"),
])
def test_a_bad_label_studio_export_is_refused_naming_the_task(tmp_path, tasks, words):
    export = tmp_path / "export.json"
    export.write_text(json.dumps(tasks))
    modality = "image" if "image" in json.dumps(tasks) else "text"
    with pytest.raises(DataError, match=r"export\.json") as err:
        to_batch(export, tmp_path / "out", get_modality(modality), ["text", "label"], "text", "label")
    assert words in str(err.value)


def test_nothing_to_ask_about_says_why(workspace):
    r = runner.invoke(app, ["label-queue", "-n", "5"])
    assert r.exit_code == 2 and "no logged input of v0001 to ask about" in r.output, r.output


def test_a_malformed_export_in_the_inbox_is_rejected_and_the_next_batch_still_merges(workspace):
    p = load_params("params.yaml")
    inbox = Path(p.paths.inbox)
    inbox.mkdir(parents=True, exist_ok=True)
    (inbox / "a-broken-export.json").write_text(json.dumps([{"data": {"text": "hi"}, "annotations": ["spam"]}]))
    (inbox / "b-good-export.json").write_text(json.dumps([
        {"data": {"text": "claim your free prize now"}, "annotations": [{"result": [{"value": {"choices": ["spam"]}}]}]},
        {"data": {"text": "see you at lunch"}, "annotations": [{"result": [{"value": {"choices": ["ham"]}}]}]}]))
    before = len(pd.read_csv("data/t.csv"))
    bad, good = ingest_all("params.yaml")
    assert not bad.accepted and "'annotations' is not a list of objects" in " ".join(bad.reasons)
    assert (inbox / "rejected" / "a-broken-export.json").exists() and not (inbox / "a-broken-export.json").exists()
    assert good.accepted and good.merged == 2 and len(pd.read_csv("data/t.csv")) == before + 2


def test_an_export_is_ingested_into_a_header_less_tsv_dataset(workspace):
    import yaml

    rows = pd.read_csv("data/t.csv")
    Path("data/t.tsv").write_text("".join(f"{lbl}\t{txt}\n" for txt, lbl in zip(rows["text"], rows["label"],
                                                                                  strict=True)))
    params = yaml.safe_load(Path("params.yaml").read_text())
    params["data"] = {"path": "data/t.tsv", "header": False, "columns": ["label", "text"], "format": "tsv"}
    Path("params.yaml").write_text(yaml.safe_dump(params))
    p = load_params("params.yaml")
    inbox = Path(p.paths.inbox)
    inbox.mkdir(parents=True, exist_ok=True)
    (inbox / "export.json").write_text(json.dumps([
        {"data": {"text": "win a free holiday now"}, "annotations": [{"result": [{"value": {"choices": ["spam"]}}]}]}]))
    [result] = ingest_all("params.yaml")
    assert result.accepted and result.merged == 1, result.reasons
    assert Path("data/t.tsv").read_text().splitlines()[-1] == "spam\twin a free holiday now"
