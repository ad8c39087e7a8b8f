"""The model card: what a registered version is, where it came from, and why it was judged so."""

from __future__ import annotations

from typing import Any

import yaml

from pipeline.core.config import section_dict
from pipeline.core.lineage import DataVersion, git_commit, shown_path, shown_paths
from pipeline.core.params import Params
from pipeline.release.decision import GateDecision


def _reference_line(rows: dict[str, int]) -> str:
    if not rows:
        return "none (monitoring needs a re-export)"
    return (f"{sum(rows.values())} held-out examples ({', '.join(f'{s} {n}' for s, n in rows.items())}), "
            "profiled with this model; production windows are compared with them")


def _training_lines(info: dict[str, Any]) -> str:
    lines = [f"- Shipped weights: {info['refit']}"] if info.get("refit") else []
    gain = info.get("gain_over_probe")
    if gain and gain.get("interval"):
        lo, hi = gain["interval"]
        verdict = "the fine-tune ships" if gain["significant"] else "within val's noise, so the frozen probe ships"
        lines.append(f"- Fine-tune vs the frozen probe on val: macro-F1 {gain['gain']:+.4f}, "
                     f"{gain['confidence']:.0%} paired-bootstrap interval [{lo:+.4f}, {hi:+.4f}]: {verdict}")
    tta = info.get("tta_choice")
    if tta and "gain" in tta:
        lines.append(f"- Test-time augmentation: {tta['tta']} (the mirrored view's val macro-F1 gain "
                     f"{tta['gain']:+.4f}; {tta['reason']})")
    cal = info.get("calibration")
    if cal:
        lines.append(f"- Calibration: temperature {cal['temperature']:.3f} fitted on val and folded into the head; "
                     f"val ECE {cal['val_ece_before']:.4f} before, {cal['val_ece_after']:.4f} after")
    return "\n".join(lines)


def _int8_line(q: dict[str, Any]) -> str:
    if not q:
        return "not produced (export.quantize is off)"
    figures = (f"accuracy {q['accuracy_int8']:.4f} vs fp32 {q['accuracy_fp32']:.4f}, top-1 agreement "
               f"{q['top1_agreement']:.2%}, {q['speedup_b1']:.2f}x fp32 at batch 1 ({q['method']})")
    return f"shipped: {figures}" if q["shipped"] else f"not shipped ({'; '.join(q['reasons'])}): {figures}"


def model_card(version: str, info: dict[str, Any], decision: GateDecision, metrics: dict[str, float],
               exported: dict[str, Any], params: Params, champion: str | None,
               data: DataVersion | None) -> str:
    metric_rows = "\n".join(f"| {k} | {v:.4f} |" for k, v in sorted(metrics.items()))
    p = exported["parity"]
    data_path = shown_path(params.data.path)  # no machine path in a card: relative, or …/folder/name
    tracked = (f"{data.md5} (DVC, tracked by `{shown_path(str(data.tracked_by))}`)" if data else
               "not tracked by DVC" + (f" (`dvc add {data_path}` versions it)" if not data_path.startswith("…")
                                       else " (it lies outside the workspace: its version is the run's dvc.lock)"))
    return f"""# Model card: {version}

**Status:** {decision.status}

## Lineage
- Data: `{data_path}`, version {tracked}
- Code (git commit): {git_commit() or 'unknown'}
- Base checkpoint: {info['name']} from {shown_path(info['source'])}
- Transfer strategy: {info['strategy']}
{_training_lines(info)}
- Labels: {', '.join(info['labels'])}
- Compared with champion: {champion or 'none (first model)'}

## Test metrics
| metric | value |
|---|---|
{metric_rows}

## Gate
{decision.to_markdown()}
## Drift reference
{_reference_line(exported.get("reference_rows") or {})}

## ONNX parity
max |logit difference| {p['max_abs_diff_logits']:.2e}, top-1 agreement {p['top1_agreement']:.2%} over
{p['examples']} test examples ({exported['provider']}).

## int8
{_int8_line(exported.get("int8") or {})}

## Params
```yaml
{yaml.safe_dump(shown_paths(section_dict(params, 'select', 'train', 'gate')), sort_keys=False, allow_unicode=True)}```
"""
