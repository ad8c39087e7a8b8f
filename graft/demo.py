"""The end-to-end demo: `graft run` on both demo workspaces, then what each step did."""

from __future__ import annotations

from pathlib import Path

from rich.console import Console

from graft import render
from graft.run import run_pipeline
from pipeline.demo_data import make_image_demo, make_text_demo
from pipeline.params import load_params

DEMOS = {"image": Path("params.yaml"), "text": Path("examples/text/params.yaml")}


def run_demo(console: Console) -> None:
    done: list[str] = []
    for modality, params_file in DEMOS.items():  # all data first: both live under the DVC-tracked data/raw
        if not params_file.exists():
            raise FileNotFoundError(f"{params_file} not found: run the demo from the repository root")
        data = Path(load_params(params_file).data.path)
        if not data.exists():
            (make_image_demo if modality == "image" else make_text_demo)(data)
            done.append(f"generated the {modality} demo data in {data}")
    for modality, params_file in DEMOS.items():
        console.rule(f"{modality} demo: graft run --params {params_file}")
        s = run_pipeline(params_file, None, console)
        render.run_summary(console, s)
        t = s["test_metrics"]
        done.append(f"{modality}: {s['model']} ({s['strategy']}), test macro-F1 {t['macro_f1']:.3f}, "
                    f"ONNX {t['latency_ms_b1']:.1f} ms at batch 1; {s['version']} {s['status']}"
                    f"{', champion' if s['champion'] == s['version'] else ''} ({s['via']})")
    console.rule("what the demo did")
    for line in done:
        console.print(f"- {line}")
    console.print("`graft models` lists the registry; serving and drift monitoring are not built yet.")
