"""Schemathesis against graft serve's OpenAPI schema, for a text and an image champion.

Every operation, positive and negative examples generated from the schema: no response may be a
server error or break the schema (status codes, content types, bodies). GRAFT_FUZZ_EXAMPLES sets
the examples per operation (a bounded number here; `make fuzz` runs many more). Each example's
outcome is counted into fuzz-counts.json under the pytest temporary folder for the record.
"""

import json
import os
from collections import Counter
from pathlib import Path

import pytest
import schemathesis
import yaml
from conftest import colour_images
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from graft.serve import create_app
from pipeline.core.config import load_params
from pipeline.production.prodlog import ProductionLog

EXAMPLES = int(os.environ.get("GRAFT_FUZZ_EXAMPLES", "30"))
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]
COUNTS: Counter = Counter()


def _app(params_path: str):
    p = load_params(params_path)
    return create_app(p, ProductionLog(p.paths.log, flush_records=1))


@pytest.fixture
def text_schema(workspace):
    return schemathesis.openapi.from_asgi("/openapi.json", _app("params.yaml"))


@pytest.fixture(scope="module")
def image_workspace(tmp_path_factory, tiny_timm_dir):
    from flows.steps import run_pipeline

    root = tmp_path_factory.mktemp("image-api")
    data = colour_images(root / "imgs", per_class=20)
    (root / "params.yaml").write_text(yaml.safe_dump({
        "data": {"path": str(data)}, "validate": {"labels": ["blue", "red"]},
        "select": {"candidates": [{"name": "test_efficientnet", "weights": str(tiny_timm_dir)}], "cv_folds": 2,
                   "strategy": "linear_probe", "latency_runs": 3},
        "export": {"latency_runs": 3, "quantize": False, "latency_seconds": 1},
        "paths": {k: str(root / v) for k, v in {"prepare": "o/prep", "validate": "o/val", "select": "o/sel",
                                                 "train": "o/train", "evaluate": "o/ev", "export": "o/exp",
                                                 "gate": "o/gate", "registry": "registry", "cache": "cache",
                                                 "log": "log", "monitor": "o/mon"}.items()}}))
    run_pipeline(root / "params.yaml", say=lambda _m: None)
    return root


@pytest.fixture
def image_schema(image_workspace):
    return schemathesis.openapi.from_asgi("/openapi.json", _app(str(image_workspace / "params.yaml")))


def _fuzz(schema, kind):
    """Every operation, positive then negative examples (schemathesis's pytest plugin is driven
    by hand: its lazy fixture loader does not run under pytest 9.2)."""
    operations = [result.ok() for result in schema.get_all_operations()]
    assert {(op.method.upper(), op.path) for op in operations} >= {("POST", "/predict"), ("GET", "/health"),
                                                                    ("GET", "/model")}
    for op in operations:
        for mode in GenerationMode:
            try:
                _examples(op, mode, kind)()
            except Unsatisfiable:  # an operation without parameters or body has no invalid input
                assert mode is GenerationMode.NEGATIVE and op.method.upper() == "GET", op.path


def _examples(op, mode, kind):
    @settings(max_examples=EXAMPLES, deadline=None, derandomize=True, database=None,
              suppress_health_check=list(HealthCheck))
    @given(case=op.as_strategy(generation_mode=mode))
    def run(case):
        response = case.call_and_validate(checks=CHECKS)
        COUNTS[f"{kind} {case.method} {case.path} {mode.value} {response.status_code}"] += 1

    return run


def test_text_model_api_never_errs_and_keeps_its_schema(text_schema):
    _fuzz(text_schema, "text")


def test_image_model_api_never_errs_and_keeps_its_schema(image_schema):
    _fuzz(image_schema, "image")


def test_zz_record_the_counts(tmp_path_factory):
    """Writes what the fuzzing above ran (examples per operation and status), for the record."""
    if not COUNTS:
        pytest.skip("the fuzz tests did not run in this session")
    out = Path(tmp_path_factory.getbasetemp()) / "fuzz-counts.json"
    out.write_text(json.dumps(dict(sorted(COUNTS.items())), indent=2))
    print(f"\nschemathesis: {sum(COUNTS.values())} examples, no server error, no schema violation ({out})")
    assert all(int(k.rsplit(" ", 1)[1]) < 500 for k in COUNTS)
