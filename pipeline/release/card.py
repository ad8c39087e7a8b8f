"""The model card: what a registered version is, where it came from, and why it was judged so."""

from __future__ import annotations

from typing import Any

import yaml

from pipeline.core.config import section_dict
from pipeline.core.lineage import DataVersion, git_commit
from pipeline.core.params import Params
from pipeline.release.decision import GateDecision


def _reference_line(rows: dict[str, int]) -> str:
    if not rows:
        return "none (monitoring needs a re-export)"
    return (f"{sum(rows.values())} held-out examples ({', '.join(f'{s} {n}' for s, n in rows.items())}), "
            "profiled with this model; production windows are compared with them")


def model_card(version: str, info: dict[str, Any], decision: GateDecision, metrics: dict[str, float],
               exported: dict[str, Any], params: Params, champion: str | None,
               data: DataVersion | None) -> str:
    metric_rows = "\n".join(f"| {k} | {v:.4f} |" for k, v in sorted(metrics.items()))
    p = exported["parity"]
    tracked = (f"{data.md5} (DVC, tracked by `{data.tracked_by}`)" if data else
               f"not tracked by DVC (`dvc add {params.data.path}` versions it)")
    return f"""# Model card: {version}

**Status:** {decision.status}

## Lineage
- Data: `{params.data.path}`, version {tracked}
- Code (git commit): {git_commit() or 'unknown'}
- Base checkpoint: {info['name']} from {info['source']}
- Transfer strategy: {info['strategy']}
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

## Params
```yaml
{yaml.safe_dump(section_dict(params, 'select', 'train', 'gate'), sort_keys=False)}```
"""
