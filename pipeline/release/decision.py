"""The gate: may a challenger replace the champion? A pure function, every criterion recorded.

Criteria, each with its value, bound and verdict:
- value bounds per metric (`min` for quality metrics, `max` for calibration error, latency, size);
- change bounds against the champion on the same test split: `min_abs` on (challenger - champion)
  and `min_rel` on (challenger - champion) / |champion|, both in the metric's good direction, so a
  negative bound is a tolerated regression;
- `require_significant`: the lower end of the paired bootstrap interval of the primary metric's
  difference must be above zero;
- per-slice value bounds;
- the export's parity check;
- a missing metric fails its criterion.
With no champion, `first_run` decides: `bless_on_value_bounds` or `require_manual`.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

from pipeline.core.params import GateParams

LOWER_IS_BETTER = {"ece", "loss", "latency_ms_b1", "latency_ms_b32", "size_mb", "params"}


@dataclass(frozen=True)
class Criterion:
    name: str
    value: float | None
    bound: str
    passed: bool
    detail: str = ""


@dataclass(frozen=True)
class GateDecision:
    status: str  # blessed | rejected | needs_approval
    criteria: list[Criterion]
    reasons: list[str]

    @property
    def blessed(self) -> bool:
        return self.status == "blessed"

    def to_dict(self) -> dict[str, Any]:
        return {"status": self.status, "blessed": self.blessed, "reasons": self.reasons,
                "criteria": [asdict(c) for c in self.criteria]}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> GateDecision:
        return cls(d["status"], [Criterion(**c) for c in d.get("criteria", [])], list(d.get("reasons", [])))

    def to_markdown(self) -> str:
        """The decision as Markdown: the reasons, then one table row per criterion. The terminal,
        the model card and the Prefect artifact all show this."""
        lines = [f"- {r}" for r in self.reasons]
        if self.criteria:
            lines += ["", "| criterion | value | bound | result | detail |", "|---|---|---|---|---|"]
            lines += [f"| {c.name} | {'-' if c.value is None else f'{c.value:.4g}'} | {c.bound} | "
                      f"{'pass' if c.passed else '**fail**'} | {c.detail} |" for c in self.criteria]
        return "\n".join(lines) + "\n"


def _good(metric: str, delta: float) -> float:
    """A change expressed so that positive is an improvement."""
    return -delta if metric in LOWER_IS_BETTER else delta


def _value_criteria(metrics: dict[str, float], bounds: dict[str, Any], prefix: str = "") -> list[Criterion]:
    out = []
    for metric, b in bounds.items():
        name = f"{prefix}{metric}"
        value = metrics.get(metric)
        if b is None:  # a default bound removed in params: shown, never silent
            out.append(Criterion(name, None if value is None else float(value), "removed", True,
                                 f"gate.bounds.{metric} is null in params"))
            continue
        if value is None or (isinstance(value, float) and math.isnan(value)):
            out.append(Criterion(name, None, _fmt_bound(b), False, "metric missing"))
            continue
        ok = (b.min is None or value >= b.min) and (b.max is None or value <= b.max)
        out.append(Criterion(name, float(value), _fmt_bound(b), ok))
    return out


def _fmt_bound(b: Any) -> str:
    parts = ([f">= {b.min:g}"] if b.min is not None else []) + ([f"<= {b.max:g}"] if b.max is not None else [])
    return " and ".join(parts) or "any"


def decide(challenger: dict[str, float], champion: dict[str, float] | None, gate: GateParams, *,
           interval: tuple[float, float] | None = None,
           slices: dict[str, dict[str, float]] | None = None,
           parity_passed: bool | None = None) -> GateDecision:
    """The gate's verdict. `interval` is the bootstrap interval of (challenger - champion) in the
    primary metric; `slices` maps slice value -> metrics for the challenger."""
    criteria = _value_criteria(challenger, gate.bounds)
    for slice_name, metrics in sorted((slices or {}).items()):
        criteria += _value_criteria(metrics, gate.slice_bounds, prefix=f"slice[{slice_name}].")
    if gate.require_parity:
        criteria.append(Criterion("onnx_parity", None if parity_passed is None else float(parity_passed),
                                  "passed", bool(parity_passed),
                                  "no export result" if parity_passed is None else ""))
    if champion is not None:
        for metric, c in gate.change.items():
            if c is None:
                criteria.append(Criterion(f"change.{metric}", None, "removed", True,
                                          f"gate.change.{metric} is null in params"))
                continue
            new, old = challenger.get(metric), champion.get(metric)
            if new is None or old is None:
                criteria.append(Criterion(f"change.{metric}", None, "vs champion", False,
                                          f"metric missing for the {'challenger' if new is None else 'champion'}"))
                continue
            gain = _good(metric, new - old)
            if c.min_abs is not None:
                criteria.append(Criterion(f"change.{metric}.abs", gain, f">= {c.min_abs:+g}", gain >= c.min_abs,
                                          f"challenger {new:.4f} vs champion {old:.4f}"))
            if c.min_rel is not None:
                rel = gain / abs(old) if old else (math.inf if gain > 0 else 0.0)
                criteria.append(Criterion(f"change.{metric}.rel", rel, f">= {c.min_rel:+.2%}", rel >= c.min_rel,
                                          f"challenger {new:.4f} vs champion {old:.4f}"))
        if gate.require_significant:
            low = interval[0] if interval else None
            criteria.append(Criterion(f"significance.{gate.primary}", low,
                                      f"bootstrap {gate.bootstrap.confidence:.0%} lower bound > 0",
                                      low is not None and low > 0,
                                      f"interval [{interval[0]:+.4f}, {interval[1]:+.4f}]" if interval else
                                      "no interval computed"))
    failed = [c for c in criteria if not c.passed]
    reasons = [f"{c.name}: {'missing' if c.value is None else f'{c.value:.4g}'} (needs {c.bound})"
               f"{'; ' + c.detail if c.detail else ''}" for c in failed]
    if failed:
        return GateDecision("rejected", criteria, reasons)
    if champion is None and gate.first_run == "require_manual":
        return GateDecision("needs_approval", criteria,
                            ["no champion yet and gate.first_run is require_manual: promote it by hand"])
    reason = ("no champion yet: every value bound holds" if champion is None
              else "every bound holds against the champion")
    return GateDecision("blessed", criteria, [reason])
