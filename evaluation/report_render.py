"""Renderers of a report object: Markdown (terminal and pull request), CSV, JSON and one self-contained HTML."""

from __future__ import annotations

import base64
import csv
import html
import io
from pathlib import Path
from typing import Any

from ni.io import atomic_open, write_json

FORMATS = ("md", "html", "csv", "json")


def _short(key: str) -> str:
    return key.split(".")[-1]


def _num(v: Any, digits: int = 2) -> str:
    if v is None:
        return ""
    if isinstance(v, float):
        return f"{v:.{digits}f}"
    return str(v)


def _ci(row: dict[str, Any], key: str) -> str:
    ci = (row.get("ci") or {}).get(key)
    return f"[{ci[0]:.1f}, {ci[1]:.1f}]" if ci else ""


def _state(row: dict[str, Any]) -> str:
    return row["state"] if row["ok"] or not row["flags"] else f"{row['state']} (!)"


def _headline(row: dict[str, Any], cat: str) -> Any:
    return next((v for k, v in (row.get("headline") or {}).items() if k.endswith(f"_for_{cat}")), None)


def run_columns(report: dict[str, Any]) -> list[str]:
    return ["run", *[_short(a) for a in report["axes"]], "state", "rougeL", "95% CI", "exact_match", "examples",
            "wall (h)", "GPU-h", "flags"]


def run_cells(report: dict[str, Any], row: dict[str, Any]) -> list[str]:
    wall = row.get("wall_seconds")
    return [row["run"], *[_num(row["varied"].get(a)) for a in report["axes"]], _state(row), _num(row.get("rougeL")),
            _ci(row, "rougeL"), _num(row.get("exact_match")), _num(row.get("num_examples")),
            "" if wall is None else f"{wall / 3600:.2f}", _num(row.get("gpu_hours")), "; ".join(row["flags"])]


def _md_table(columns: list[str], rows: list[list[str]]) -> str:
    def cell(s: str) -> str:
        return s.replace("|", "\\|").replace("\n", " ")

    lines = ["| " + " | ".join(cell(c) for c in columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(cell(c) for c in r) + " |" for r in rows]
    return "\n".join(lines)


def to_markdown(report: dict[str, Any]) -> str:
    rows = report["rows"]
    out = [f"# ROUGE-L report ({len(rows)} runs)", "",
           f"Paths: {', '.join(report['paths'])}. 95% CI: bootstrap over test tasks (seed {report['seed']}).", ""]
    out += ["## Runs", "", _md_table(run_columns(report), [run_cells(report, r) for r in rows]), ""]
    if report["problems"]:
        out += ["**Runs needing attention:** " + "; ".join(
            f"`{p['run']}` {p['state']}" + (f" ({', '.join(p['flags'])})" if p["flags"] else "")
            for p in report["problems"]), ""]
    cats = report["categories"]
    if cats:
        metric = report["headline_metric"]
        cols = ["run", *[f"{c} ({'EM' if metric.get(c) == 'exact_match' else 'RL'})" for c in cats]]
        body = [[r["run"], *[_num(_headline(r, c)) for c in cats]] for r in rows if r.get("headline") is not None]
        out += ["## Per-category headline metrics", "", _md_table(cols, body), ""]
    for p in report["pivots"]:
        if p["kind"] == "matrix":
            body = [[rv, *[_num(v) for v in vals]] for rv, vals in zip(p["rows"], p["values"], strict=True)]
            out += [f"## {p['metric']}: {_short(p['rows_axis'])} (rows) x {_short(p['cols_axis'])} (columns)", "",
                    _md_table([f"{_short(p['rows_axis'])} \\ {_short(p['cols_axis'])}", *p["cols"]], body), ""]
        else:
            out += [f"## {p['metric']} vs {_short(p['axis'])}", "",
                    _md_table([_short(p["axis"]), p["metric"]], [[_num(x), _num(y)] for x, y in zip(p["x"], p["y"],
                                                                                                      strict=True)]),
                    ""]
    c = report["comparison"]
    if c:
        verdict = "significant" if c["significant"] else "not significant (interval contains 0)"
        out += ["## Paired comparison (best two runs)", "",
                f"`{c['a']}` - `{c['b']}`: {c['diff']:+.2f} ROUGE-L, 95% CI [{c['ci'][0]:+.2f}, {c['ci'][1]:+.2f}] "
                f"over {c['tasks']} common tasks: {verdict}.", ""]
    bw = [[r["run"], ", ".join(f"{t} {v:.1f}" for t, v in r["best_worst"]["best"]),
           ", ".join(f"{t} {v:.1f}" for t, v in r["best_worst"]["worst"])] for r in rows if r.get("best_worst")]
    if bw:
        out += ["## Best / worst tasks (ROUGE-L)", "", _md_table(["run", "best", "worst"], bw), ""]
    ref = [[f"{b['name']} (computed)", b["track"], _num(b.get("rougeL")), _num(b.get("exact_match")),
            b.get("error", b["data"])] for b in report["baselines"]]
    ref += [[f"{p['name']}", p["track"], _num(p["rougeL"]), "", p["source"]] for p in report["published"]]
    if ref:
        out += ["## Reference rows", "", _md_table(["reference", "track", "ROUGE-L", "EM", "source"], ref), ""]
    return "\n".join(out)


def to_csv(report: dict[str, Any]) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    cats = report["categories"]
    w.writerow(["run", *report["axes"], "state", "ok", "flags", "rougeL", "rougeL_ci_low", "rougeL_ci_high",
                "exact_match", "rouge1", "num_examples", "wall_seconds", "gpu_hours",
                *[f"{report['headline_metric'].get(c, 'rougeL')}_for_{c}" for c in cats]])
    for r in report["rows"]:
        ci = (r.get("ci") or {}).get("rougeL") or [None, None]
        w.writerow([r["run"], *[r["varied"].get(a) for a in report["axes"]], r["state"], r["ok"],
                    "; ".join(r["flags"]), r.get("rougeL"), ci[0], ci[1], r.get("exact_match"), r.get("rouge1"),
                    r.get("num_examples"), r.get("wall_seconds"), r.get("gpu_hours"),
                    *[_headline(r, c) for c in cats]])
    return buf.getvalue()


def tasks_csv(report: dict[str, Any]) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    runs = [r for r in report["rows"] if r.get("per_task") is not None]
    w.writerow(["task", *[r["run"] for r in runs]])
    for t in report["tasks"]:
        w.writerow([t, *[r["per_task"].get(t) for r in runs]])
    return buf.getvalue()


_CSS = """body{font-family:system-ui,sans-serif;margin:24px;color:#222}table{border-collapse:collapse;margin:8px 0 24px}
th,td{border:1px solid #ccc;padding:3px 8px;font-size:13px;text-align:right}td:first-child,th:first-child{text-align:left}
#runs td:last-child{text-align:left}th{background:#f2f2f2;cursor:pointer}tr.bad td{background:#fff1f0}.flag{color:#b00;text-align:left}
.pub{color:#666;font-style:italic}img{max-width:100%;border:1px solid #eee;margin:6px}"""
_JS = """
function sortTable(th){const t=th.closest('table'),i=[...th.parentNode.children].indexOf(th),
b=t.tBodies[0],rows=[...b.rows],asc=th.dataset.asc!=='1';th.dataset.asc=asc?'1':'0';
const v=r=>{const s=r.cells[i].dataset.v??r.cells[i].textContent;const n=parseFloat(s);return isNaN(n)?s:n};
rows.sort((x,y)=>{const a=v(x),c=v(y);return (a>c?1:a<c?-1:0)*(asc?1:-1)});rows.forEach(r=>b.appendChild(r));}
document.querySelectorAll('th').forEach(th=>th.addEventListener('click',()=>sortTable(th)));
function imagesDone(){const im=[...document.images];const ok=im.filter(i=>i.complete&&i.naturalWidth>0).length;
document.body.dataset.imagesTotal=im.length;document.body.dataset.imagesLoaded=ok;
document.body.dataset.imagesOk=(ok===im.length)?'true':'false';}
Promise.all([...document.images].map(i=>i.complete?1:new Promise(r=>{i.onload=i.onerror=r}))).then(imagesDone);
"""


def _html_table(columns: list[str], rows: list[tuple[list[str], dict[str, str]]], table_id: str) -> str:
    head = "".join(f"<th>{html.escape(c)}</th>" for c in columns)
    body = []
    for cells, attrs in rows:
        a = "".join(f' {k}="{html.escape(v)}"' for k, v in attrs.items())
        body.append(f"<tr{a}>" + "".join(f"<td>{html.escape(c)}</td>" for c in cells) + "</tr>")
    return f'<table id="{table_id}" data-rows="{len(rows)}"><thead><tr>{head}</tr></thead><tbody>{"".join(body)}</tbody></table>'


def to_html(report: dict[str, Any], plots: dict[str, bytes]) -> str:
    rows = report["rows"]
    parts = [f"<h1>ROUGE-L report ({len(rows)} runs)</h1>",
             f"<p>Paths: {html.escape(', '.join(report['paths']))}. 95% CI: bootstrap over test tasks "
             f"(seed {report['seed']}). Click a column header to sort.</p>", "<h2>Runs</h2>",
             _html_table(run_columns(report), [(run_cells(report, r), {"data-run": r["run"], "data-state": r["state"],
                                                                       "class": "" if r["ok"] else "bad"})
                                               for r in rows], "runs")]
    for name, png in plots.items():
        b64 = base64.b64encode(png).decode()
        parts.append(f'<img alt="{html.escape(name)}" data-file="{html.escape(name)}" src="data:image/png;base64,{b64}">')
    cats = report["categories"]
    if cats:
        parts += ["<h2>Per-category headline metrics</h2>", _html_table(
            ["run", *cats], [([r["run"], *[_num(_headline(r, c)) for c in cats]], {}) for r in rows
                             if r.get("headline") is not None], "categories")]
    c = report["comparison"]
    if c:
        parts.append(f"<h2>Paired comparison</h2><p>{html.escape(c['a'])} - {html.escape(c['b'])}: "
                     f"{c['diff']:+.2f} ROUGE-L, 95% CI [{c['ci'][0]:+.2f}, {c['ci'][1]:+.2f}] over {c['tasks']} "
                     f"tasks ({'significant' if c['significant'] else 'not significant'}).</p>")
    ref: list[tuple[list[str], dict[str, str]]] = [
        ([f"{b['name']} (computed)", b["track"], _num(b.get("rougeL")), b.get("error", b["data"])], {})
           for b in report["baselines"]]
    ref += [([p["name"], p["track"], _num(p["rougeL"]), p["source"]], {"class": "pub"}) for p in report["published"]]
    if ref:
        parts += ["<h2>Reference rows</h2>", _html_table(["reference", "track", "ROUGE-L", "source"], ref, "reference")]
    runs = [r for r in rows if r.get("per_task") is not None]
    if report["tasks"] and runs:
        parts += ["<h2>Per-task ROUGE-L (sortable)</h2>", _html_table(
            ["task", *[r["run"] for r in runs]],
            [([t, *[_num(r["per_task"].get(t)) for r in runs]], {}) for t in report["tasks"]], "tasks")]
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>ROUGE-L report</title><style>{_CSS}</style>"
            f"</head><body>{''.join(parts)}<script>{_JS}</script></body></html>")


def write_report(report: dict[str, Any], out: Path, formats: list[str]) -> list[Path]:
    """Write the requested formats (and the plots beside the HTML) atomically under `out`."""
    written: list[Path] = []

    def text(name: str, content: str) -> None:
        with atomic_open(out / name) as fh:
            fh.write(content)
        written.append(out / name)

    if "json" in formats:
        write_json(out / "report.json", report)
        written.append(out / "report.json")
    if "md" in formats:
        text("report.md", to_markdown(report) + "\n")
    if "csv" in formats:
        text("runs.csv", to_csv(report))
        text("tasks.csv", tasks_csv(report))
    if "html" in formats:
        from evaluation.plots import report_plots

        plots = report_plots(report)
        for name, png in plots.items():
            with atomic_open(out / name, "wb") as fh:
                fh.write(png)
            written.append(out / name)
        text("report.html", to_html(report, plots))
    return written
