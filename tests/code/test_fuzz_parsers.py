"""Property tests of the parsers a user's files meet first: random bytes, encodings, delimiters and
YAML give a frame, or a DataError / ParamsError with a message; never another exception.

GRAFT_FUZZ_EXAMPLES sets the examples per property (bounded here; `make fuzz` runs many more).
"""

import os
import string

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pipeline.core.config import load_params, parse_params
from pipeline.core.errors import DataError, ParamsError
from pipeline.data.tables import ROW_ERRORS, read_table

EXAMPLES = int(os.environ.get("GRAFT_FUZZ_EXAMPLES", "30")) * 4
FUZZ = settings(max_examples=EXAMPLES, deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])

cells = st.one_of(st.text(max_size=20), st.sampled_from(["", " ", '"', '""', "\t", ",", "\n", "\r\n", "\x00", "\ufeff",
                                                         "\ud800", "NaN", "null"]))
encodings = st.sampled_from(["utf-8", "utf-16", "latin-1", "cp1252", "shift_jis", "ascii", "no-such-codec"])


def _frame_or_data_error(path, data):
    try:
        frame = read_table(path, data)
    except DataError as exc:
        assert str(exc)
        return
    assert data.text_column in frame.columns
    errors = frame.attrs[ROW_ERRORS]
    assert all(isinstance(k, int) and 0 <= k < len(frame) and v for k, v in errors.items())
    for i, value in enumerate(frame[data.text_column].tolist()):
        assert value is None or isinstance(value, str) or value != value, (i, value)  # never a cast


@FUZZ
@given(raw=st.binary(max_size=400), ext=st.sampled_from([".csv", ".tsv", ".jsonl", ".parquet", ".txt"]),
       encoding=encodings, header=st.booleans())
def test_random_bytes_give_a_frame_or_a_data_error(tmp_path_factory, raw, ext, encoding, header):
    path = tmp_path_factory.mktemp("raw") / f"data{ext}"
    path.write_bytes(raw)
    cols = {} if header else {"columns": ["text", "label"]}
    data = parse_params({"data": {"encoding": encoding, "header": header, **cols,
                                  **({"format": "csv"} if ext == ".txt" else {})}}).data
    _frame_or_data_error(path, data)


@FUZZ
@given(rows=st.lists(st.lists(cells, min_size=0, max_size=4), max_size=8),
       sep=st.sampled_from([",", "\t", ";", "|"]), ext=st.sampled_from([".csv", ".tsv"]), encoding=encodings)
def test_random_delimited_tables_give_a_frame_or_a_data_error(tmp_path_factory, rows, sep, ext, encoding):
    text = "text,label\n" if ext == ".csv" else "text\tlabel\n"
    text += "\n".join(sep.join(r) for r in rows) + "\n"
    path = tmp_path_factory.mktemp("tab") / f"data{ext}"
    path.write_bytes(text.encode(encoding if encoding != "no-such-codec" else "utf-8", "replace"))
    data = parse_params({"data": {"encoding": encoding}}).data
    _frame_or_data_error(path, data)


json_values = st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=10),
                           lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner,
                                                                                       max_size=3), max_leaves=8)


@FUZZ
@given(lines=st.lists(st.one_of(json_values, st.fixed_dictionaries({"text": json_values, "label": json_values})),
                      max_size=6))
def test_random_jsonl_gives_a_frame_or_a_data_error(tmp_path_factory, lines):
    import json

    path = tmp_path_factory.mktemp("jsonl") / "data.jsonl"
    path.write_text("\n".join(json.dumps(v) for v in lines) + "\n", encoding="utf-8")
    data = parse_params({}).data
    _frame_or_data_error(path, data)


yaml_values = st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
                           lambda inner: st.lists(inner, max_size=3) | st.dictionaries(
                               st.sampled_from(["data", "train", "validate", "paths", "epochs", "lr", "labels",
                                                "path", "x", "monitor", "serve", "port"]) | st.text(max_size=6),
                               inner, max_size=4), max_leaves=12)


@FUZZ
@given(doc=st.one_of(yaml_values, st.binary(max_size=200), st.text(max_size=200)))
def test_random_params_files_give_params_or_a_params_error(tmp_path_factory, doc):
    path = tmp_path_factory.mktemp("params") / "params.yaml"
    if isinstance(doc, bytes):
        path.write_bytes(doc)
    elif isinstance(doc, str):
        path.write_text(doc, encoding="utf-8", errors="surrogatepass")
    else:
        path.write_text(yaml.safe_dump(doc), encoding="utf-8", errors="surrogatepass")
    try:
        load_params(path)
    except ParamsError as exc:
        assert str(exc)


keys = st.sampled_from(["train.epochs", "train.lr", "data.path", "validate.labels", "serve.port", "monitor",
                        "nope.key", "train", "", "train.lora.r", "gate.bounds.macro_f1.min"])


@FUZZ
@given(sets=st.lists(st.tuples(keys | st.text(alphabet=string.printable, max_size=12),
                               st.text(max_size=20)), max_size=3), sep=st.sampled_from(["=", "", "=="]))
def test_random_set_overrides_give_params_or_a_params_error(tmp_path_factory, sets, sep):
    path = tmp_path_factory.mktemp("set") / "params.yaml"
    path.write_text("")
    try:
        load_params(path, [f"{k}{sep}{v}" for k, v in sets])
    except ParamsError as exc:
        assert str(exc)
