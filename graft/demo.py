"""The end-to-end demo: every stage that exists, on both demo datasets."""

from __future__ import annotations

from pathlib import Path

from rich.console import Console

from graft import render
from pipeline.demo_data import make_image_demo, make_text_demo
from pipeline.params import load_params
from pipeline.prepare import run_prepare
from pipeline.select import run_select
from pipeline.train import run_train
from pipeline.validate import run_validate

DEMOS = {"image": Path("params.yaml"), "text": Path("examples/text/params.yaml")}


def run_demo(console: Console) -> None:
    done: list[str] = []
    for modality, params_file in DEMOS.items():
        if not params_file.exists():
            raise FileNotFoundError(f"{params_file} not found: run the demo from the repository root")
        params = load_params(params_file)
        data = Path(params.data.path)
        if not data.exists():
            (make_image_demo if modality == "image" else make_text_demo)(data)
            done.append(f"generated the {modality} demo data in {data}")
        console.rule(f"{modality} demo ({params_file})")
        prepared = run_prepare(params, params.paths.prepare)
        render.prepare_summary(console, prepared.summary(), Path(params.paths.prepare))
        report = run_validate(params, params.paths.prepare, params.paths.validate_, params_file)
        render.validation_summary(console, report.summary(), Path(params.paths.validate_))
        done.append(f"{modality}: prepared {len(prepared.manifest)} examples and validated them "
                    f"({len(report.accepted)} accepted, {len(report.quarantine)} quarantined) "
                    f"-> {params.paths.validate_}/report.html")
        selected = run_select(params, params.paths.validate_, params.paths.select)
        render.leaderboard(console, selected, Path(params.paths.select))
        trained = run_train(params, params.paths.validate_, params.paths.select, params.paths.train,
                            log=lambda _e, row: render.epoch(console, row))
        render.train_summary(console, trained)
        done.append(f"{modality}: chose {selected.chosen.name} (probe macro-F1 "
                    f"{selected.chosen.probe_macro_f1:.3f}) and {trained.strategy}; test macro-F1 "
                    f"{trained.test['macro_f1']:.3f} -> {trained.model_dir}")
    console.rule("what the demo did")
    for line in done:
        console.print(f"- {line}")
    console.print("Gating, ONNX export, serving and drift monitoring are not built yet; the demo runs "
                  "them as they land.")
