"""Data Docs that render on a machine without internet, and the whole report on one page.

Great Expectations' Data Docs pages load Bootstrap, jQuery, Font Awesome and Vega from CDNs,
and its index page is an empty table that JavaScript from a CDN fills: offline (a cluster
without egress, a reviewer on a train) the pages render unstyled and the index shows nothing.
So after GX builds the site, every page gets the stylesheet below inline instead of the CDN
links (the validation and suite pages are static HTML; only GX's decoration needs scripts), and
the index is replaced by a static one. ``report.html`` is the whole validation on one
self-contained page (every table, every rule, the offending files): what the KFP UI shows as
the step's HTML artifact.
"""

from __future__ import annotations

import html
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

REPORT_FILE = "report.html"

# Enough of Bootstrap's look for GX's markup (grid, cards, tables, navbar, badges, alerts), plus
# the Font Awesome glyphs GX uses for status, as Unicode.
STYLE = """
:root { --ok: #1e7e34; --bad: #c82333; --warn: #b7791f; --line: #dee2e6; --muted: #6c757d; }
* { box-sizing: border-box; }
body { margin: 0; font: 14px/1.5 -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial,
  "DejaVu Sans", sans-serif; color: #212529; background: #f8f9fa; }
a { color: #0b5ed7; text-decoration: none; } a:hover { text-decoration: underline; }
h1, h2, h3, h4, h5 { font-weight: 600; line-height: 1.25; margin: .6em 0 .4em; }
.container, .container-fluid { width: 100%; padding: 0 16px; margin: 0 auto; }
.container { max-width: 1140px; }
.row { display: flex; flex-wrap: wrap; margin: 0 -8px; }
[class^="col"], [class*=" col"] { padding: 0 8px; flex: 1 1 0; min-width: 0; }
.col-md-2, .col-lg-2 { flex: 0 0 220px; } .col-12 { flex: 0 0 100%; }
.navbar { display: flex; align-items: center; gap: 16px; padding: 8px 16px; background: #fff;
  border-bottom: 1px solid var(--line); }
.navbar img, .ge-doc-logo { display: none; }
.breadcrumb { display: flex; gap: 6px; list-style: none; padding: 0; margin: 8px 0; }
.breadcrumb-item + .breadcrumb-item::before { content: "/"; color: var(--muted);
  padding-right: 6px; }
.card { background: #fff; border: 1px solid var(--line); border-radius: 6px; margin: 12px 0; }
.card-header { padding: 8px 14px; border-bottom: 1px solid var(--line); background: #f1f3f5;
  font-weight: 600; }
.card-body { padding: 10px 14px; }
table, .table { width: 100%; border-collapse: collapse; margin: 6px 0 12px; background: #fff; }
th, td { text-align: left; vertical-align: top; padding: 6px 10px;
  border-top: 1px solid var(--line); }
thead th { border-bottom: 2px solid var(--line); background: #f1f3f5; }
tbody tr:nth-child(odd) { background: #fbfcfd; }
.text-success, .ok { color: var(--ok); } .text-danger, .bad { color: var(--bad); }
.text-warning, .warn { color: var(--warn); } .text-muted, .muted { color: var(--muted); }
.badge { display: inline-block; padding: 2px 8px; border-radius: 10px; font-size: 12px;
  font-weight: 600; color: #fff; background: var(--muted); }
.badge-success, .badge.ok { background: var(--ok); }
.badge-danger, .badge.bad { background: var(--bad); }
.badge.warn { background: var(--warn); }
.alert { padding: 8px 12px; border-radius: 6px; border: 1px solid var(--line); background: #fff; }
.nav, .nav-tabs { display: flex; gap: 12px; list-style: none; padding: 0; }
.tab-pane, .fade, .collapse { display: block !important; opacity: 1 !important; }
.btn, .ge-newsletter, .sticky, .d-none, button { display: none !important; }
.sticky-top { position: sticky; top: 0; }
ul.nav.flex-column, .ge-toc { display: block; }
code, pre { font: 13px/1.4 "DejaVu Sans Mono", Menlo, Consolas, monospace; }
pre { white-space: pre-wrap; background: #f1f3f5; padding: 8px; border-radius: 4px; }
.fas, .far, .fa { font-style: normal; }
.fa-check-circle::before, .fa-check::before { content: "\\2714"; }
.fa-times-circle::before, .fa-times::before, .fa-exclamation-triangle::before { content: "\\2718"; }
.fa-info-circle::before { content: "\\2139"; }
"""

_EXTERNAL = re.compile(
    r"<link[^>]+href=\"https?://[^\"]*\"[^>]*>"
    r"|<script[^>]+src=\"https?://[^\"]*\"[^>]*>\s*</script>"
    r"|<img[^>]+src=\"https?://[^\"]*\"[^>]*>",
    re.IGNORECASE,
)
_CSS_URL = re.compile(r"url\(['\"]?https?://[^)]*\)", re.IGNORECASE)  # the logo in GX's CSS
_FOOTER = re.compile(r"<footer>.*?</footer>", re.IGNORECASE | re.DOTALL)  # GX's newsletter


def offline_page(text: str) -> str:
    """A Data Docs page without its CDN links and external images, with the style inline."""
    text = _EXTERNAL.sub("", text)
    text = _FOOTER.sub("", text)
    text = _CSS_URL.sub("none", text)
    style = f"<style>{STYLE}</style>"
    if "</head>" in text:
        return text.replace("</head>", f"{style}</head>", 1)
    return style + text


def make_offline(docs_dir: Path) -> None:
    """Rewrite every page of the Data Docs site under ``docs_dir`` to render offline."""
    for page in sorted(docs_dir.rglob("*.html")):
        page.write_text(offline_page(page.read_text(encoding="utf-8")), encoding="utf-8")


def _status(success: bool, critical: bool) -> str:
    if success:
        return '<span class="badge ok">passed</span>'
    if critical:
        return '<span class="badge bad">FAILED</span>'
    return '<span class="badge warn">warning</span>'


def _page(title: str, body: str) -> str:
    return (
        '<!doctype html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>{html.escape(title)}</title><style>{STYLE}</style></head>"
        f'<body><div class="container">{body}</div></body></html>\n'
    )


def _rules_table(rules: Sequence[dict[str, Any]], listed: int) -> str:
    rows = []
    for rule in rules:
        offending = [str(item) for item in rule.get("offending") or []]
        shown = ", ".join(html.escape(item) for item in offending[:listed])
        if len(offending) > listed:
            shown += f' <span class="muted">(+{len(offending) - listed} more)</span>'
        rows.append(
            "<tr>"
            f"<td>{_status(bool(rule['success']), bool(rule['critical']))}</td>"
            f"<td>{html.escape(str(rule['rule']))}</td>"
            f"<td><code>{html.escape(str(rule['expectation']))}</code></td>"
            f"<td>{shown}</td>"
            "</tr>"
        )
    return (
        '<table class="table"><thead><tr><th>status</th><th>rule</th><th>expectation</th>'
        "<th>offending</th></tr></thead><tbody>" + "".join(rows) + "</tbody></table>"
    )


def _header(report: dict[str, Any]) -> str:
    verdict = _status(bool(report["passed"]), critical=True)
    # the champion's class map against the data's, or the validate_data.classes it replaced
    classes = report.get("class_conflict") or ""
    if not classes and report.get("overridden_classes"):
        given = ", ".join(report["overridden_classes"])
        classes = f"validate_data.classes [{given}]: overridden by {report['class_source']}"
    return (
        f"<h1>Data validation: {html.escape(str(report['data_dir']))} {verdict}</h1>"
        '<p class="muted">'
        f"data version <code>{html.escape(str(report['data_version']))}</code> · "
        f"{report['n_images']} images · {len(report['classes'])} classes "
        f"(from {html.escape(str(report['class_source']))})</p>"
        + (f"<p><strong>{html.escape(classes)}</strong></p>" if classes else "")
    )


def write_report(out_dir: Path, report: dict[str, Any], docs_dir: Path, listed: int) -> Path:
    """``report.html`` (the whole validation, self-contained) and the Data Docs' static index.

    Args:
        out_dir: Where ``report.html`` goes (the validate_data output).
        report: validation.json's content.
        docs_dir: The Data Docs site (its ``index.html`` is replaced).
        listed: Offending items listed per rule (all are in validation.json).

    Returns:
        The path of ``report.html``.
    """
    by_table: dict[str, list[dict[str, Any]]] = {}
    for rule in report["rules"]:
        by_table.setdefault(str(rule["table"]), []).append(rule)
    sections = []
    for table, rules in by_table.items():
        sections.append(f'<div class="card"><div class="card-header">{html.escape(table)}</div>')
        sections.append(f'<div class="card-body">{_rules_table(rules, listed)}</div></div>')
    skipped = report.get("skipped_files") or []
    if skipped:
        items = "".join(
            f"<tr><td>{html.escape(s['path'])}</td><td>{html.escape(s['reason'])}</td></tr>"
            for s in skipped
        )
        sections.append(
            '<div class="card"><div class="card-header">files not used</div>'
            '<div class="card-body"><table class="table"><thead><tr><th>file</th>'
            f"<th>why</th></tr></thead><tbody>{items}</tbody></table></div></div>"
        )
    path = out_dir / REPORT_FILE
    path.write_text(_page("Data validation", _header(report) + "".join(sections)), "utf-8")
    pages = []
    for table in by_table:
        found = sorted((docs_dir / "validations").rglob(f"*-{table}.html"))
        suites = sorted((docs_dir / "expectations").rglob(f"{table}.html"))
        rules = by_table[table]
        passed = all(r["success"] or not r["critical"] for r in rules)
        links = [
            f'<a href="{p.relative_to(docs_dir).as_posix()}">{label}</a>'
            for p, label in [
                *((p, "validation result") for p in found[-1:]),
                *((p, "expectation suite") for p in suites[:1]),
            ]
        ]
        pages.append(
            f"<tr><td>{_status(passed, True)}</td><td>{html.escape(table)}</td>"
            f"<td>{len(rules)}</td><td>{' · '.join(links)}</td></tr>"
        )
    index = (
        _header(report)
        + '<p><a href="../report.html">the whole report on one page</a></p>'
        + '<table class="table"><thead><tr><th>status</th><th>table</th><th>rules</th>'
        + "<th>pages</th></tr></thead><tbody>"
        + "".join(pages)
        + "</tbody></table>"
    )
    (docs_dir / "index.html").write_text(_page("Data Docs", index), "utf-8")
    return path
