"""A self-contained HTML page for a validation run: verdict, counts, checks, quarantined rows."""

from __future__ import annotations

from html import escape
from typing import Any

import pandas as pd

from pipeline.core.artifacts import SPLITS
from pipeline.modalities.registry import get_modality

_STYLE = """
body{font:14px/1.45 system-ui,sans-serif;margin:2rem auto;max-width:1100px;color:#222}
h1{font-size:1.5rem} .pass{color:#17803d} .fail{color:#c0262d} .warn{color:#a15c00}
table{border-collapse:collapse;margin:.5rem 0 1.5rem;width:100%}
th,td{border:1px solid #ddd;padding:.3rem .5rem;text-align:left;vertical-align:top}
th{background:#f4f4f4} td.num{text-align:right;font-variant-numeric:tabular-nums}
code{font-size:12px}
"""
_MAX_ROWS = 500


def _table(headers: list[str], rows: list[list[Any]], numeric: set[int] = frozenset()) -> str:
    head = "".join(f"<th>{escape(h)}</th>" for h in headers)
    body = "".join(
        "<tr>" + "".join(
            f"<td class=num>{escape(str(c))}</td>" if i in numeric else f"<td>{c}</td>"
            for i, c in enumerate(r)) + "</tr>"
        for r in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def render_html(summary: dict[str, Any], quarantine: pd.DataFrame) -> str:
    ok = summary["success"]
    verdict = '<span class=pass>PASSED</span>' if ok else '<span class=fail>FAILED</span>'
    parts = [f"<h1>graft validation: {verdict}</h1>",
             f"<p>{summary['rows']} rows ({summary['modality']}): {summary['accepted']} accepted, "
             f"{summary['quarantined']} quarantined. Labels: {escape(', '.join(summary['labels']))}"
             f"{' (inferred from the data)' if summary['labels_inferred'] else ''}.</p>"]
    if summary["failures"]:
        parts.append("<h2 class=fail>Why it failed</h2><ul>" +
                     "".join(f"<li>{escape(f)}</li>" for f in summary["failures"]) + "</ul>")
    if summary["warnings"]:
        parts.append("<h2 class=warn>Warnings</h2><ul>" +
                     "".join(f"<li>{escape(w)}</li>" for w in summary["warnings"]) + "</ul>")
    parts.append("<h2>Accepted examples per class and split</h2>" + _table(
        ["label", *SPLITS], [[escape(lbl), *(c[s] for s in SPLITS)] for lbl, c in summary["counts"].items()],
        numeric={1, 2, 3}))
    parts.append("<h2>Expectations</h2>" + _table(
        ["result", "level", "severity", "expectation", "unexpected", "detail"],
        [["<span class=pass>pass</span>" if c["success"] else
          f"<span class={'warn' if c['severity'] == 'warning' else 'fail'}>fail</span>",
          c["level"], c["severity"], f"<code>{escape(c['name'])}</code>", c["unexpected"],
          escape(c["detail"])] for c in summary["checks"]], numeric={4}))
    if len(quarantine):
        shown = quarantine.head(_MAX_ROWS)
        what = "path" if get_modality(summary["modality"]).folder_data else "text"
        parts.append(f"<h2>Quarantined rows ({len(quarantine)}"
                     f"{', first ' + str(_MAX_ROWS) if len(quarantine) > _MAX_ROWS else ''})</h2>" + _table(
            ["id", what, "label", "split", "reason"],
            [[escape(str(r["id"])), escape(str(r[what])[:200]), escape(str(r["label"])),
              escape(str(r["split"])), escape(str(r["reason"]))] for _, r in shown.iterrows()]))
    return (f"<!doctype html><html><head><meta charset=utf-8><title>graft validation</title>"
            f"<style>{_STYLE}</style></head><body>{''.join(parts)}</body></html>\n")
