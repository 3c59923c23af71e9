"""Renderers of a report object: Markdown (terminal and pull request), CSV, JSON and one self-contained HTML."""

from __future__ import annotations

import base64
import csv
import html
import io
from pathlib import Path
from typing import Any

from evaluation.plots import report_plots
from evaluation.report_groups import format_seconds
from evaluation.scoring import group_key, group_value
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
    return group_value(row.get("headline") or {}, cat)


def run_columns(report: dict[str, Any]) -> list[str]:
    return ["run", *[_short(a) for a in report["axes"]], "state", "rougeL", "95% CI", "exact_match", "examples",
            "wall (all attempts)", "GPU-h", "flags"]


def run_cells(report: dict[str, Any], row: dict[str, Any]) -> list[str]:
    return [row["run"], *[_num(row["varied"].get(a)) for a in report["axes"]], _state(row), _num(row.get("rougeL")),
            _ci(row, "rougeL"), _num(row.get("exact_match")), _num(row.get("num_examples")),
            format_seconds(row.get("wall_seconds")), _num(row.get("gpu_hours")), "; ".join(row["flags"])]


def _pm(mean: float | None, std: float | None) -> str:
    if mean is None:
        return ""
    return f"{mean:.2f}" if std is None else f"{mean:.2f} ± {std:.2f}"


def _baseline_names(report: dict[str, Any]) -> list[str]:
    return sorted({n for g in report["groups"] for n in g.get("vs_baselines", {})})


def _vs(g: dict[str, Any], name: str) -> str:
    d = g.get("vs_baselines", {}).get(name)
    if not d:
        return ""
    if d["ci"][0] != d["ci"][0]:  # NaN: a single common task
        return f"{d['diff']:+.1f}"
    return f"{d['diff']:+.1f} [{d['ci'][0]:+.1f}, {d['ci'][1]:+.1f}]" + (" *" if d["significant"] else "")


def group_columns(report: dict[str, Any]) -> list[str]:
    reps = "/".join(_short(a) for a in report["replicate_axes"]) or "replicates"
    return ["configuration", *[_short(a) for a in report["config_axes"]], f"{reps}s (n)", "rougeL mean ± std",
            "95% CI (tasks, pooled)", "EM mean ± std", "examples", "wall (mean)", "GPU-h",
            *[f"vs {b}" for b in _baseline_names(report)], "state"]


def group_cells(report: dict[str, Any], g: dict[str, Any]) -> list[str]:
    reps = ", ".join(sorted(("/".join(str(v) for v in r.values()) for r in g["replicates"]
                             if any(v is not None for v in r.values())), key=lambda s: (len(s), s)))
    state = "ok" if g["ok"] else ", ".join(g["states"]) + " (!)"
    return [g["name"], *[_num(g["varied"].get(a)) for a in report["config_axes"]],
            f"{g['n']}" + (f" ({reps})" if reps else ""), _pm(g["rougeL"], g["rougeL_std"]),
            _ci(g, "rougeL"), _pm(g["exact_match"], g["exact_match_std"]), _num(g["num_examples"]),
            format_seconds(g.get("wall_seconds")), _num(g.get("gpu_hours")),
            *[_vs(g, b) for b in _baseline_names(report)], state]


def data_line(report: dict[str, Any]) -> str:
    """What the runs were tested on, for the top of the report."""
    parts = []
    for d in report["data"]:
        where = f"the embedded synthetic default data ({d['root']})" if d["embedded"] else d["root"]
        inst = "/".join(str(n) for n in d["instances"]) or "no"
        split = "; the real NI test split" if d["ni_test_split"] else ""
        parts.append(f"{where}, track {d['track']}: {d['tasks']} test tasks, {inst} instances per run{split}")
    return "Tested on " + "; ".join(parts) + "." if parts else "No test data found."


def _md_table(columns: list[str], rows: list[list[str]]) -> str:
    def cell(s: str) -> str:
        return s.replace("|", "\\|").replace("\n", " ")

    lines = ["| " + " | ".join(cell(c) for c in columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(cell(c) for c in r) + " |" for r in rows]
    return "\n".join(lines)


def _title(report: dict[str, Any]) -> str:
    n, g = len(report["rows"]), len(report["groups"])
    reps = "/".join(_short(a) for a in report["replicate_axes"])
    counts = sorted({x["n"] for x in report["groups"]})
    per = "/".join(map(str, counts)) or "0"
    return f"ROUGE-L report ({n} runs" + (f": {g} configurations x {per} {reps}s)" if reps else ")")


def _intro(report: dict[str, Any]) -> str:
    pooled = (f" with the instances of every {'/'.join(map(_short, report['replicate_axes']))} pooled per task"
              if report["replicate_axes"] else "")
    return (f"95% CI: bootstrap over test tasks{pooled} (seed {report['seed']}); `vs X`: the paired difference to "
            "a heuristic baseline on the same test data, * = interval excludes 0.")


def _matrix_cell(p: dict[str, Any], i: int, j: int) -> str:
    v = p["values"][i][j]
    if v is None:
        return ""
    std, n = p.get("std", [[None]])[i][j] if p.get("std") else None, p["n"][i][j] if p.get("n") else 1
    return _pm(v, std) + (f" (n={n})" if n and n > 1 else "")


def to_markdown(report: dict[str, Any]) -> str:
    rows, groups = report["rows"], report["groups"]
    out = [f"# {_title(report)}", "", data_line(report), "",
           f"Paths: {', '.join(report['paths'])}. {_intro(report)}", ""]
    out += ["## Configurations" + (" (replicates aggregated)" if report["replicate_axes"] else ""), "",
            _md_table(group_columns(report), [group_cells(report, g) for g in groups]), ""]
    if report["problems"]:
        out += ["**Runs needing attention:** " + "; ".join(
            f"`{p['run']}` {p['state']}" + (f" ({', '.join(p['flags'])})" if p["flags"] else "")
            for p in report["problems"]), ""]
    ref = [[f"{b['name']} (computed on the runs' test data)", b["track"], _num(b.get("rougeL")),
            _num(b.get("exact_match")), b.get("error", b["data"])] for b in report["baselines"]]
    ref += [[f"{p['name']} (published)", p["track"], _num(p["rougeL"]), "", p["source"]] for p in report["published"]]
    if ref:
        out += ["## Reference rows", "", _md_table(["reference", "track", "ROUGE-L", "EM", "source"], ref), ""]
    cats = report["categories"]
    if cats:
        metric = report["headline_metric"]
        cols = ["configuration", *[f"{c} ({'EM' if metric.get(c) == 'exact_match' else 'RL'})" for c in cats]]
        body = [[g["name"], *[_num(_headline(g, c)) for c in cats]] for g in groups if g.get("headline")]
        out += ["## Per-category headline metrics (mean over replicates)", "", _md_table(cols, body), ""]
    for p in report["pivots"]:
        if p["kind"] == "matrix":
            body = [[rv, *[_matrix_cell(p, i, j) for j in range(len(p["cols"]))]] for i, rv in enumerate(p["rows"])]
            out += [f"## {p['metric']}: {_short(p['rows_axis'])} (rows) x {_short(p['cols_axis'])} (columns)", "",
                    _md_table([f"{_short(p['rows_axis'])} \\ {_short(p['cols_axis'])}", *p["cols"]], body), ""]
        else:
            stds = p.get("std") or [None] * len(p["x"])
            out += [f"## {p['metric']} vs {_short(p['axis'])}", "",
                    _md_table([_short(p["axis"]), p["metric"]],
                              [[_num(x), _pm(y, s)] for x, y, s in zip(p["x"], p["y"], stds, strict=True)]), ""]
    c = report["comparison"]
    if c:
        verdict = "significant" if c["significant"] else "not significant (interval contains 0)"
        out += ["## Paired comparison (best two configurations)", "",
                f"`{c['a']}` - `{c['b']}`: {c['diff']:+.2f} ROUGE-L, 95% CI [{c['ci'][0]:+.2f}, {c['ci'][1]:+.2f}] "
                f"over {c['tasks']} common tasks: {verdict}.", ""]
    bw = [[g["name"], ", ".join(f"{t} {v:.1f}" for t, v in g["best_worst"]["best"]),
           ", ".join(f"{t} {v:.1f}" for t, v in g["best_worst"]["worst"])] for g in groups if g["best_worst"]["best"]]
    if bw:
        out += ["## Best / worst tasks (ROUGE-L)", "", _md_table(["configuration", "best", "worst"], bw), ""]
    out += ["## Runs" + (" (one per replicate)" if report["replicate_axes"] else ""), "",
            _md_table(run_columns(report), [run_cells(report, r) for r in rows]), ""]
    return "\n".join(out)


def to_csv(report: dict[str, Any]) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    cats = report["categories"]
    w.writerow(["run", *report["axes"], "state", "ok", "flags", "rougeL", "rougeL_ci_low", "rougeL_ci_high",
                "exact_match", "rouge1", "num_examples", "wall_seconds", "last_attempt_seconds", "gpu_hours",
                *[group_key(report["headline_metric"].get(c, "rougeL"), c) for c in cats]])
    for r in report["rows"]:
        ci = (r.get("ci") or {}).get("rougeL") or [None, None]
        w.writerow([r["run"], *[r["varied"].get(a) for a in report["axes"]], r["state"], r["ok"],
                    "; ".join(r["flags"]), r.get("rougeL"), ci[0], ci[1], r.get("exact_match"), r.get("rouge1"),
                    r.get("num_examples"), r.get("wall_seconds"), r.get("last_attempt_seconds"), r.get("gpu_hours"),
                    *[_headline(r, c) for c in cats]])
    return buf.getvalue()


def groups_csv(report: dict[str, Any]) -> str:
    """One row per configuration: replicates aggregated, and the paired difference to each baseline."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    names = _baseline_names(report)
    w.writerow(["configuration", *report["config_axes"], "n", "runs", "rougeL_mean", "rougeL_std", "rougeL_ci_low",
                "rougeL_ci_high", "exact_match_mean", "exact_match_std", "num_examples", "wall_seconds_mean",
                "gpu_hours", *[f"vs_{b}_{k}" for b in names for k in ("diff", "ci_low", "ci_high")]])
    for g in report["groups"]:
        ci = (g.get("ci") or {}).get("rougeL") or [None, None]
        vs = [(d["diff"], d["ci"][0], d["ci"][1]) if (d := g["vs_baselines"].get(b)) else (None, None, None)
              for b in names]
        w.writerow([g["name"], *[g["varied"].get(a) for a in report["config_axes"]], g["n"], " ".join(g["runs"]),
                    g["rougeL"], g["rougeL_std"], ci[0], ci[1], g["exact_match"], g["exact_match_std"],
                    g["num_examples"], g["wall_seconds"], g["gpu_hours"], *[x for t in vs for x in t]])
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
#runs td:last-child,#groups td:last-child,#bestworst td{text-align:left}th{background:#f2f2f2;cursor:pointer}tr.bad td{background:#fff1f0}.flag{color:#b00;text-align:left}
.pub{color:#666;font-style:italic}summary{cursor:pointer;font-weight:600;margin:12px 0}img{max-width:100%;border:1px solid #eee;margin:6px}"""
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
    rows, groups = report["rows"], report["groups"]
    esc = html.escape
    parts = [f"<h1>{esc(_title(report))}</h1>", f'<p id="data">{esc(data_line(report))}</p>',
             f"<p>Paths: {esc(', '.join(report['paths']))}. {esc(_intro(report))} Click a column header to sort.</p>",
             "<h2>Configurations" + (" (replicates aggregated)" if report["replicate_axes"] else "") + "</h2>",
             _html_table(group_columns(report), [(group_cells(report, g), {"data-group": g["name"], "data-n": str(g["n"]),
                                                                           "class": "" if g["ok"] else "bad"})
                                                 for g in groups], "groups")]
    ref: list[tuple[list[str], dict[str, str]]] = [
        ([f"{b['name']} (computed on the runs' test data)", b["track"], _num(b.get("rougeL")), b.get("error", b["data"])],
         {"data-ref": b["name"]}) for b in report["baselines"]]
    ref += [([f"{p['name']} (published)", p["track"], _num(p["rougeL"]), p["source"]],
             {"class": "pub", "data-ref": "published"}) for p in report["published"]]
    if ref:
        parts += ["<h2>Reference rows</h2>", _html_table(["reference", "track", "ROUGE-L", "source"], ref, "reference")]
    c = report["comparison"]
    if c:
        parts.append(f"<h2>Paired comparison</h2><p>{esc(c['a'])} - {esc(c['b'])}: "
                     f"{c['diff']:+.2f} ROUGE-L, 95% CI [{c['ci'][0]:+.2f}, {c['ci'][1]:+.2f}] over {c['tasks']} "
                     f"tasks ({'significant' if c['significant'] else 'not significant'}).</p>")
    for name, png in plots.items():
        b64 = base64.b64encode(png).decode()
        parts.append(f'<img alt="{esc(name)}" data-file="{esc(name)}" src="data:image/png;base64,{b64}">')
    cats = report["categories"]
    if cats:
        parts += ["<h2>Per-category headline metrics (mean over replicates)</h2>", _html_table(
            ["configuration", *cats], [([g["name"], *[_num(_headline(g, c)) for c in cats]], {}) for g in groups
                                       if g.get("headline")], "categories")]
    bw: list[tuple[list[str], dict[str, str]]] = [([g["name"], ", ".join(f"{t} {v:.1f}" for t, v in g["best_worst"]["best"]),
            ", ".join(f"{t} {v:.1f}" for t, v in g["best_worst"]["worst"])], {}) for g in groups
          if g["best_worst"]["best"]]
    if bw:
        parts += ["<h2>Best / worst tasks (ROUGE-L)</h2>", _html_table(["configuration", "best", "worst"], bw, "bestworst")]
    if report["tasks"] and groups:
        parts += ["<h2>Per-task ROUGE-L, mean over replicates (sortable)</h2>", _html_table(
            ["task", *[g["name"] for g in groups]],
            [([t, *[_num(g["per_task"].get(t)) for g in groups]], {}) for t in report["tasks"]], "tasks")]
    runs = [r for r in rows if r.get("per_task") is not None]
    parts += [f'<details id="per-run"><summary>Runs, one per replicate ({len(rows)})</summary>',
              _html_table(run_columns(report), [(run_cells(report, r), {"data-run": r["run"], "data-state": r["state"],
                                                                        "class": "" if r["ok"] else "bad"})
                                                for r in rows], "runs")]
    if report["tasks"] and runs:
        parts.append(_html_table(["task", *[r["run"] for r in runs]],
                                 [([t, *[_num(r["per_task"].get(t)) for r in runs]], {}) for t in report["tasks"]],
                                 "run-tasks"))
    parts.append("</details>")
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
        text("groups.csv", groups_csv(report))
        text("tasks.csv", tasks_csv(report))
    if "html" in formats:
        plots = report_plots(report)
        for name, png in plots.items():
            with atomic_open(out / name, "wb") as fh:
                fh.write(png)
            written.append(out / name)
        text("report.html", to_html(report, plots))
    return written
