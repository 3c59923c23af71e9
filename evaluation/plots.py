"""Matplotlib plots of a report (PNG bytes): encoding-matrix heatmap, scaling curves, per-category bars.

Every plot shows configurations, i.e. the mean over replicates (seeds), with their spread: the heatmap writes
mean ± std (n), curves and bars carry std error bars."""

from __future__ import annotations

import io
from typing import Any

from evaluation.scoring import group_value


def _png(fig: Any) -> bytes:
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90, bbox_inches="tight")
    plt.close(fig)
    return buf.getvalue()


def heatmap(pivot: dict[str, Any]) -> bytes:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    values = np.array([[np.nan if v is None else v for v in row] for row in pivot["values"]], dtype=float)
    fig, ax = plt.subplots(figsize=(1.6 + 1.3 * len(pivot["cols"]), 1.2 + 0.6 * len(pivot["rows"])))
    im = ax.imshow(values, cmap="viridis", aspect="auto")
    ax.set_xticks(range(len(pivot["cols"])), pivot["cols"], rotation=30, ha="right", fontsize=8)
    ax.set_yticks(range(len(pivot["rows"])), pivot["rows"], fontsize=8)
    ax.set_xlabel(pivot["cols_axis"])
    ax.set_ylabel(pivot["rows_axis"])
    finite = values[np.isfinite(values)]
    mid = float(finite.mean()) if finite.size else 0.0
    stds, ns = pivot.get("std"), pivot.get("n")
    for i in range(values.shape[0]):
        for j in range(values.shape[1]):
            if np.isfinite(values[i, j]):
                label = f"{values[i, j]:.1f}"
                if stds and stds[i][j] is not None:
                    label += f" ± {stds[i][j]:.1f}"
                if ns and ns[i][j] > 1:
                    label += f"\n(n={ns[i][j]})"
                ax.text(j, i, label, ha="center", va="center", fontsize=8,
                        color="white" if values[i, j] < mid else "black")
    fig.colorbar(im, ax=ax, label=pivot["metric"])
    ax.set_title(f"{pivot['metric']}: {pivot['rows_axis']} x {pivot['cols_axis']}")
    return _png(fig)


def curve(pivot: dict[str, Any]) -> bytes:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.5, 3.5))
    errs = [s or 0.0 for s in pivot.get("std") or [None] * len(pivot["x"])]
    ax.errorbar(pivot["x"], pivot["y"], yerr=errs, marker="o", capsize=3)
    if len(pivot["x"]) > 2 and min(pivot["x"]) > 0 and max(pivot["x"]) / min(pivot["x"]) >= 16:
        ax.set_xscale("log")
    ax.set_xlabel(pivot["axis"])
    ax.set_ylabel(pivot["metric"])
    ax.grid(alpha=0.3)
    ax.set_title(f"{pivot['metric']} vs {pivot['axis']}")
    return _png(fig)


def category_bars(groups: list[dict[str, Any]], categories: list[str], max_groups: int = 8) -> bytes | None:
    """The headline metric of each category, one bar per configuration (mean over replicates, std error bar)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    scored = [g for g in groups if g.get("headline")][:max_groups]
    if not scored or not categories:
        return None
    fig, ax = plt.subplots(figsize=(max(6.0, 0.9 * len(categories) + 2), 4))
    width = 0.8 / len(scored)
    x = np.arange(len(categories))
    for i, g in enumerate(scored):
        ys = [group_value(g["headline"], c) or 0.0 for c in categories]
        errs = [group_value(g.get("headline_std", {}), c) or 0.0 for c in categories]
        ax.bar(x + i * width - 0.4 + width / 2, ys, width, yerr=errs, capsize=2,
               label=f"{g['name'][-40:]} (n={g['n']})")
    ax.set_xticks(x, categories, rotation=30, ha="right", fontsize=8)
    ax.set_ylabel("headline metric (EM or ROUGE-L)")
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1, 1))
    ax.set_title("per-category headline metric (mean over replicates)")
    return _png(fig)


def configurations(groups: list[dict[str, Any]], baselines: list[dict[str, Any]], max_groups: int = 12) -> bytes | None:
    """ROUGE-L of each configuration (mean over replicates, 95% task interval pooled over them) against the
    heuristic baselines scored on the same test data (dashed lines)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    scored = [g for g in groups if g.get("rougeL") is not None][:max_groups]
    if not scored:
        return None
    fig, ax = plt.subplots(figsize=(max(5.5, 1.2 * len(scored) + 3), 3.8))
    ys = [g["rougeL"] for g in scored]
    cis = [(g.get("ci") or {}).get("rougeL") or [y, y] for g, y in zip(scored, ys, strict=True)]
    err = [[y - lo for y, (lo, _) in zip(ys, cis, strict=True)], [hi - y for y, (_, hi) in zip(ys, cis, strict=True)]]
    ax.bar(range(len(scored)), ys, yerr=err, capsize=4, color="#4c72b0")
    ax.set_xticks(range(len(scored)), [f"{g['name'][-38:]}\n(n={g['n']})" for g in scored], rotation=20, ha="right",
                  fontsize=8)
    for i, b in enumerate(r for r in baselines if r.get("rougeL") is not None):
        ax.axhline(b["rougeL"], ls="--", lw=1.2, color=f"C{i + 1}", label=f"{b['name']} {b['rougeL']:.1f}")
    if any(r.get("rougeL") is not None for r in baselines):
        ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1, 1), title="same test data", title_fontsize=8)
    ax.set_ylabel("ROUGE-L")
    ax.set_title("configurations (mean, 95% task interval) vs heuristic baselines")
    ax.grid(axis="y", alpha=0.3)
    return _png(fig)


def report_plots(report: dict[str, Any]) -> dict[str, bytes]:
    """{file name: PNG bytes} for every plot the report calls for."""
    out: dict[str, bytes] = {}
    overview = configurations(report["groups"], report["baselines"])
    if overview is not None:
        out["configurations.png"] = overview
    for i, p in enumerate(report["pivots"]):
        if p["kind"] == "matrix":
            out[f"matrix-{i}.png"] = heatmap(p)
        elif p["kind"] == "curve":
            out[f"curve-{p['axis'].replace('.', '_')}.png"] = curve(p)
    bars = category_bars(report["groups"], report["categories"])
    if bars is not None:
        out["categories.png"] = bars
    return out
