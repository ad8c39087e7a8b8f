"""performance.html: the label-free estimate over the monitoring windows, beside what labels said.

One self-contained page per monitoring run, written next to Evidently's drift report: this
window's estimate with its interval, the realised accuracy where labels arrived, the champion's
test accuracy and the retraining line (test accuracy minus monitor.max_estimated_drop), and a plot
of every window in the history (matplotlib, inline SVG).
"""

from __future__ import annotations

import io
from datetime import datetime
from html import escape
from typing import Any


def _plot(history: list[dict[str, Any]]) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [h for h in history if h.get("performance")]
    if not rows:
        return ""
    when = [datetime.fromisoformat(h["window"]["end"]) for h in rows]
    perf = [h["performance"] for h in rows]
    fig, ax = plt.subplots(figsize=(8, 3.2), dpi=100)
    ax.fill_between(when, [p["accuracy_low"] for p in perf], [p["accuracy_high"] for p in perf], alpha=0.25,
                    label="estimate interval", step="mid")
    ax.plot(when, [p["accuracy"] for p in perf], marker="o", label=f"estimated accuracy ({perf[-1]['method']})")
    real = [(w, p["realised"]["accuracy"]) for w, p in zip(when, perf, strict=True) if p.get("realised")]
    if real:
        ax.scatter(*zip(*real, strict=True), marker="x", color="black", zorder=3, label="realised (labels arrived)")
    test = perf[-1].get("test_accuracy")
    if test is not None:
        ax.axhline(test, color="green", linestyle="--", linewidth=1, label="test accuracy")
        ax.axhline(test - perf[-1]["max_estimated_drop"], color="red", linestyle=":", linewidth=1,
                   label="retraining line (estimated_drop)")
    ax.set_ylabel("accuracy")
    ax.set_ylim(max(0.0, min(p["accuracy_low"] for p in perf) - 0.05), 1.0)
    ax.legend(fontsize=7, loc="lower left")
    fig.autofmt_xdate()
    fig.tight_layout()
    buf = io.StringIO()
    fig.savefig(buf, format="svg")
    plt.close(fig)
    return buf.getvalue()[buf.getvalue().index("<svg"):]


def render(result: dict[str, Any], history: list[dict[str, Any]]) -> str:
    """The page for this monitoring result (DriftResult.to_dict()) and the history before it."""
    p = result.get("performance") or {}
    rows = []
    if p:
        rows.append(("estimated accuracy", f"{p['accuracy']:.3f} [{p['accuracy_low']:.3f}, {p['accuracy_high']:.3f}]"))
        if p.get("macro_f1") is not None:
            rows.append(("estimated macro-F1", f"{p['macro_f1']:.3f} [{p['macro_f1_low']:.3f}, {p['macro_f1_high']:.3f}]"))
        rows.append(("method", f"{p['method']} on {p['records']} records, no labels"))
        if p.get("reference_accuracy") is not None:
            rows.append(("check on the reference's test rows",
                         f"estimated {p['reference_estimate']:.3f}, true {p['reference_accuracy']:.3f}"))
        if p.get("test_accuracy") is not None:
            rows.append(("champion's test accuracy", f"{p['test_accuracy']:.3f}"))
            rows.append(("estimated drop", f"{p['estimated_drop']:+.3f} (harmful above {p['max_estimated_drop']:g}: "
                                           f"{'yes' if p['harmful'] else 'no'})"))
        if p.get("realised"):
            r = p["realised"]
            rows.append(("realised accuracy", f"{r['accuracy']:.3f} on {r['records']} labelled records "
                                              f"(estimated {r['estimated_accuracy_same_records']:.3f} on them)"))
    table = "".join(f"<tr><th>{escape(k)}</th><td>{escape(v)}</td></tr>" for k, v in rows)
    reasons = "".join(f"<li>{escape(r)}</li>" for r in result.get("reasons", []))
    plot = _plot([*history, result])
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>graft: performance of "
            f"{escape(result['champion'])}</title><style>body{{font-family:sans-serif;max-width:900px;margin:2em auto}}"
            f"th{{text-align:left;padding-right:1em}}</style></head><body>"
            f"<h1>Performance without labels: {escape(result['champion'])}</h1>"
            f"<p>decision: <b>{escape(result['decision'])}</b>; retraining triggered: "
            f"<b>{'yes' if result.get('trigger') else 'no'}</b></p><table>{table or '<tr><td>no estimate: too few records</td></tr>'}</table>"
            f"{plot}<h2>Reasons</h2><ul>{reasons}</ul></body></html>")
