"""The layout holds: pipeline/ is plain Python, flows/ only wires, no import cycles, and every
stage has one name in the stage table, dvc.yaml, the CLI and the training flow."""

import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from pipeline.workspace import PACKAGES, closure, imported_names, module_file, project_imports

REPO = Path(__file__).resolve().parents[2]
FORBIDDEN = ("prefect", "dvc", "dvclive", "typer", "click", "fastapi", "uvicorn", "graft", "flows")


def _module_name(path: Path) -> str:
    return ".".join(path.relative_to(REPO).with_suffix("").parts)


def test_pipeline_imports_no_framework_not_even_inside_functions():
    offenders = [f"{p.relative_to(REPO)}: {n}" for p in sorted((REPO / "pipeline").rglob("*.py"))
                 for n in imported_names(p) if n.split(".")[0] in FORBIDDEN]
    assert not offenders, offenders


def test_flows_import_nothing_from_graft():
    offenders = [f"{p.relative_to(REPO)}: {n}" for p in sorted((REPO / "flows").rglob("*.py"))
                 for n in imported_names(p) if n.split(".")[0] == "graft"]
    assert not offenders, offenders


def test_no_import_cycles_between_modules():
    graph = {_module_name(p): {_module_name(module_file(n)) for n in project_imports(p)}
             for pkg in PACKAGES for p in (REPO / pkg).rglob("*.py") if p.name != "__init__.py"}
    cycles, state = [], {}

    def visit(node, stack):
        state[node] = "open"
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == "open":
                cycles.append([*stack[stack.index(nxt):], nxt])
            elif nxt not in state:
                visit(nxt, [*stack, nxt])
        state[node] = "done"

    for node in sorted(graph):
        if node not in state:
            visit(node, [node])
    assert not cycles, [" -> ".join(c) for c in cycles]


def test_importing_every_pipeline_module_loads_no_framework():
    code = (
        "import importlib, pkgutil, sys, pipeline\n"
        "for m in pkgutil.walk_packages(pipeline.__path__, 'pipeline.'): importlib.import_module(m.name)\n"
        f"bad = sorted(n for n in sys.modules if n.split('.')[0] in {FORBIDDEN!r})\n"
        "print(bad); sys.exit(1 if bad else 0)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_graft_ingest_and_the_stage_runner_load_no_prefect():
    code = ("import sys, flows.steps, graft.cli\n"
            "bad = sorted(n for n in sys.modules if n.split('.')[0] == 'prefect')\n"
            "print(bad); sys.exit(1 if bad else 0)\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_no_pipeline_module_is_a_hub():
    long = {str(p.relative_to(REPO)): n for p in (REPO / "pipeline").rglob("*.py")
            if (n := len(p.read_text().splitlines())) > 300}
    assert not long, long


# ---------------------------------------------------------------- one name per stage


@pytest.fixture(scope="module")
def dvc_stages():
    return yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]


def _folder(stage: str) -> str:
    return f"${{paths.{stage}}}"


def _entries(items):
    """dvc.yaml list entries: a path, or {path: options}."""
    return {(next(iter(i)) if isinstance(i, dict) else i): (next(iter(i.values())) if isinstance(i, dict) else {})
            for i in items or []}


def test_every_stage_is_a_dvc_stage_with_the_same_params_and_outputs(dvc_stages):
    from pipeline.stages import STAGES

    assert list(dvc_stages) == [s.name for s in STAGES]
    for s in STAGES:
        d, f = dvc_stages[s.name], _folder(s.name)
        assert d["cmd"].startswith(f"graft {s.name} ") and d["cmd"].endswith(f"--out {f}"), d["cmd"]
        assert d["params"] == list(s.sections), s.name
        outs = _entries(d.get("outs"))
        expected = {(f if o == "" else f"{f}/{o}") for o in s.outs} | {f"{f}/{o}" for o in s.persist}
        assert set(outs) == expected, s.name
        assert all(outs[f"{f}/{o}"] == {"cache": False, "persist": True} for o in s.persist), s.name
        assert set(_entries(d.get("metrics"))) == {f"{f}/{m}" for m in s.metrics}, s.name
        for read in s.reads:  # what it reads from other stages is a dependency
            assert any(dep.startswith(_folder(read)) for dep in d["deps"]), (s.name, read)


def test_each_dvc_stage_depends_on_every_pipeline_module_it_imports(dvc_stages):
    from pipeline.stages import STAGES

    for s in STAGES:
        deps = [REPO / dep for dep in dvc_stages[s.name]["deps"] if not dep.startswith("$")]
        needed = closure(s.entry.split(":")[0])
        missing = sorted(str(f.relative_to(REPO)) for f in needed
                         if not any(f == dep or dep in f.parents for dep in deps))
        assert not missing, f"dvc.yaml stage {s.name} lacks deps {missing}"


def test_every_stage_is_a_cli_command_and_a_flow_task():
    import flows.training as training
    from graft.cli import app
    from pipeline.stages import NAMES, STAGE

    commands = {c.name or c.callback.__name__ for c in app.registered_commands}
    assert set(NAMES) <= commands
    assert list(training.TASKS) == list(NAMES)
    assert [t.name for t in training.TASKS.values()] == list(NAMES)
    for name in NAMES:  # the entry point exists and is the stage module's run_<name>
        assert STAGE[name].load().__name__ == f"run_{name}"
        assert re.fullmatch(rf"pipeline\.\w+\.{name}:run_{name}", STAGE[name].entry)


# ---------------------------------------------------------------- one modality interface


def _modality_switches(path: Path, names: set[str]) -> list[str]:
    """Comparisons of a modality (a name or attribute called modality, or ["modality"]) with a
    modality's name: `modality == "image"`, `d.modality != "text"`, `modality in ("image", ...)`."""
    import ast

    def mentions_modality(node: ast.AST) -> bool:
        return any((isinstance(n, ast.Name) and "modality" in n.id) or (isinstance(n, ast.Attribute) and
                   "modality" in n.attr) or (isinstance(n, ast.Constant) and n.value == "modality")
                   for n in ast.walk(node))

    def names_a_modality(node: ast.AST) -> bool:
        return any(isinstance(n, ast.Constant) and n.value in names for n in ast.walk(node))

    out = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Compare):
            sides = [node.left, *node.comparators]
            if any(mentions_modality(s) for s in sides) and any(names_a_modality(s) for s in sides):
                out.append(f"{path.relative_to(REPO)}:{node.lineno}: {ast.unparse(node)}")
    return out


def test_no_module_outside_the_modalities_compares_a_modality_name():
    from pipeline.modalities.registry import MODALITIES

    names = set(MODALITIES)
    files = [p for pkg in PACKAGES for p in (REPO / pkg).rglob("*.py") if "modalities" not in p.parts]
    offenders = [hit for p in sorted(files) for hit in _modality_switches(p, names)]
    assert not offenders, offenders


def test_the_modality_check_finds_a_switch(tmp_path):
    """The check above is no formality: it finds the switches it forbids."""
    probe = REPO / "tests" / "code" / "_switch_probe.py"
    probe.write_text('def f(meta, modality):\n    a = meta["modality"] == "image"\n'
                     '    return a or modality in ("text", "audio") or meta.get("x") == "image"\n')
    try:
        hits = _modality_switches(probe, {"image", "text", "audio"})
    finally:
        probe.unlink()
    assert [h.split(": ", 1)[1] for h in hits] == ["meta['modality'] == 'image'", "modality in ('text', 'audio')"]


def test_every_modality_implements_the_interface():
    from pipeline.modalities.base import Modality
    from pipeline.modalities.registry import MODALITIES

    required = ("scan", "load_backbone", "rebuild", "dataset", "input_names", "export_module", "codec")
    for name, kind in MODALITIES.items():
        assert kind.name == name and kind.feature_names and kind.noun
        missing = [m for m in required if getattr(type(kind), m) is getattr(Modality, m)]
        assert not missing, (name, missing)
        assert not kind.folder_data or kind.extensions, name
