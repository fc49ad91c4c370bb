"""`flageval report`: one self-contained HTML page over several runs of the same datasets.

Per dataset: each chip's accuracy against the baseline with the paired 95 % interval and the tolerance
band, the disagreement table with its flipped samples (expandable), latency distributions per chip, and
truncation and error rates. Charts are Plotly figures; plotly.js is inlined once, so the page needs no
network (nothing is fetched when it is opened).
"""

from __future__ import annotations

import html
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from flageval.api import DatasetResult
from flageval.baseline import Candidate, choose_baseline
from flageval.report.compare import (
    RIGHT_TO_WRONG,
    Disagreement,
    RunDir,
    brief,
    disagreement,
    load_run,
)
from flageval.verdict import DEFAULT_TOLERANCE, release_verdict

MAX_FLIPPED_SHOWN = 200  # per (chip, dataset); the rest are counted, `flageval compare --json` lists them all
PLOT_CONFIG = {"displaylogo": False, "responsive": True}


@dataclass
class _Row:
    """One chip on one dataset."""

    run: RunDir
    result: DatasetResult
    is_baseline: bool
    diff: float | None = None
    within: bool = False
    found: Disagreement | None = None
    latencies: list[float] | None = None


def baseline_of(runs: Sequence[RunDir]) -> RunDir:
    """The reference of the report: the rule /evaluation_diffs applies to the runs compared (the first
    '-nvidia-origin' service, else the first run given)."""
    candidates = [Candidate("report", r.eval_model, r.baseline_key, ref=r) for r in runs]
    marked = next((c for c in candidates if c.is_baseline), candidates[0])
    chosen = choose_baseline(marked, candidates, compare_all=True)
    assert chosen is not None and chosen.ref is not None
    return chosen.ref


def build_report(runs: Sequence[RunDir], *, tolerance: float = DEFAULT_TOLERANCE, title: str | None = None) -> str:
    if not runs:
        raise ValueError("no runs to report on")
    import plotly.offline

    base = baseline_of(runs)
    datasets = list(dict.fromkeys(d for r in runs for d in r.results))
    sections, summary = [], []
    for dataset in datasets:
        rows = _rows(dataset, runs, base, tolerance)
        if rows:
            sections.append(_dataset_section(dataset, rows, base, tolerance, len(sections)))
    for run in runs:
        results = list(run.results.values())
        verdicts, release = release_verdict(results, None if run is base else list(base.results.values()), tolerance=tolerance)
        summary.append((run, verdicts, release))
    title = title or f"flageval report: {', '.join(r.label for r in runs)}"
    return _PAGE.format(
        title=html.escape(title),
        plotly=plotly.offline.get_plotlyjs(),
        style=_STYLE,
        heading=html.escape(title),
        intro=_intro(base, tolerance),
        summary=_summary_table(summary, datasets, base),
        sections="\n".join(sections),
    )


def load_runs(run_dirs: Sequence[Path]) -> tuple[list[RunDir], list[str]]:
    """The directories that hold results, and why each other one was left out. ValueError when none does."""
    runs, skipped = [], []
    for d in run_dirs:
        try:
            runs.append(load_run(d))
        except ValueError as exc:  # a service none of whose datasets finished (refused, never ran)
            skipped.append(str(exc))
    if not runs:
        raise ValueError("; ".join(skipped) or "no runs to report on")
    return runs, skipped


def write_report(run_dirs: Sequence[Path], out: Path, *, tolerance: float = DEFAULT_TOLERANCE, title: str | None = None) -> Path:
    runs, _ = load_runs(run_dirs)
    text = build_report(runs, tolerance=tolerance, title=title)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(out)
    return out


# -- data ------------------------------------------------------------------------------------------------

def _rows(dataset: str, runs: Sequence[RunDir], base: RunDir, tolerance: float) -> list[_Row]:
    base_result = base.results.get(dataset)
    base_samples = base.samples(dataset) if base_result is not None else []
    rows = []
    for run in runs:
        result = run.results.get(dataset)
        if result is None:
            continue
        samples = base_samples if run is base else run.samples(dataset)
        row = _Row(run, result, run is base, latencies=[c.latency * 1000 for s in samples for c in s.calls or () if c.latency is not None])
        if run is not base and base_result is not None:
            (verdict,), _ = release_verdict([result], [base_result], tolerance=tolerance)
            row.diff, row.within = verdict.diff, verdict.within_tolerance
            row.found = disagreement(dataset, base_samples, samples, baseline_name=base.label, run_name=run.label)
        rows.append(row)
    return rows


# -- page parts -------------------------------------------------------------------------------------------

def _intro(base: RunDir, tolerance: float) -> str:
    return (f"<p>Baseline: <b>{html.escape(base.label)}</b>. A chip is within tolerance on a dataset when it succeeded and "
            f"|accuracy − baseline| &lt; {tolerance:g} points. Intervals are paired-bootstrap 95 % intervals of the "
            f"difference; p is the exact McNemar test on the samples both runs scored.</p>")


def _summary_table(summary, datasets: list[str], base: RunDir) -> str:
    head = "".join(f"<th>{html.escape(d)}</th>" for d in datasets)
    body = []
    for run, verdicts, release in summary:
        by = {v.dataset: v for v in verdicts}
        cells = []
        for d in datasets:
            v = by.get(d)
            if v is None:
                cells.append("<td>—</td>")
                continue
            acc = "—" if v.accuracy is None else f"{v.accuracy:.2f}"
            diff = "" if run is base or v.diff is None else f" ({v.diff:+.2f})"
            css = "ok" if v.within_tolerance else "bad"
            cells.append(f'<td class="{css}">{html.escape(v.status.value)} {acc}{diff}</td>')
        verdict = "baseline" if run is base else ("release" if release else "no release")
        body.append(f"<tr><th>{html.escape(run.label)}</th>{''.join(cells)}<td>{verdict}</td></tr>")
    return f'<table class="summary"><tr><th>run</th>{head}<th>verdict</th></tr>{"".join(body)}</table>'


def _dataset_section(dataset: str, rows: list[_Row], base: RunDir, tolerance: float, number: int) -> str:
    parts = [f'<section id="ds-{html.escape(dataset)}"><h2>{html.escape(dataset)}</h2>']
    base_row = next((r for r in rows if r.is_baseline), None)
    if base_row is None or base_row.result.accuracy is None:
        parts.append(f"<p>No baseline accuracy for {html.escape(dataset)}: {html.escape(base.label)} has no successful run of it.</p>")
    else:
        parts.append(_figure_html(_accuracy_figure(dataset, rows, base_row, tolerance), f"acc-{number}"))
    parts.append(_disagreement_html(rows))
    charts = []
    if any(r.latencies for r in rows):
        charts.append(_figure_html(_latency_figure(dataset, rows), f"lat-{number}"))
    else:
        parts.append("<p>No latency figures: these runs kept none (written before the engine recorded them, or every answer came from the cache).</p>")
    if any(r.result.serving for r in rows):
        charts.append(_figure_html(_rates_figure(dataset, rows), f"rates-{number}"))
    parts.append(f'<div class="charts">{"".join(charts)}</div>')
    parts.append(_serving_table(rows))
    parts.extend(_flipped_html(r) for r in rows if r.found is not None)
    parts.append("</section>")
    return "\n".join(parts)


def _figure_html(figure, div_id: str) -> str:
    return f'<div class="chart">{figure.to_html(full_html=False, include_plotlyjs=False, div_id=div_id, config=PLOT_CONFIG)}</div>'


def _accuracy_figure(dataset: str, rows: list[_Row], base_row: _Row, tolerance: float):
    import plotly.graph_objects as go

    base_acc = base_row.result.accuracy
    xs, ys, up, down, texts, colours = [], [], [], [], [], []
    for row in rows:
        acc = row.result.accuracy
        if acc is None:
            continue
        xs.append(row.run.label)
        ys.append(acc)
        ci = row.found.diff_ci if row.found is not None else None
        # the paired interval of the diff, placed around the baseline: where this chip's accuracy may lie
        up.append(max(0.0, base_acc + ci[1] - acc) if ci else 0.0)
        down.append(max(0.0, acc - (base_acc + ci[0])) if ci else 0.0)
        p = row.found.p_value if row.found is not None else None
        texts.append("baseline" if row.is_baseline else
                     f"diff {row.diff:+.2f}" + (f", p={p:.3g}" if p is not None else "") if row.diff is not None else "")
        colours.append("#4c78a8" if row.is_baseline else ("#54a24b" if row.within else "#e45756"))
    fig = go.Figure(go.Scatter(
        x=xs, y=ys, mode="markers+text", text=texts, textposition="middle right", marker={"size": 12, "color": colours}, cliponaxis=False,
        error_y={"type": "data", "symmetric": False, "array": up, "arrayminus": down, "thickness": 1.5, "width": 8},
        name="accuracy", hovertemplate="%{x}<br>accuracy %{y:.2f}<extra></extra>"))
    fig.add_hrect(y0=base_acc - tolerance, y1=base_acc + tolerance, fillcolor="#4c78a8", opacity=0.15, line_width=0,
                  annotation_text=f"baseline ± {tolerance:g}", annotation_position="bottom right")
    fig.add_hline(y=base_acc, line_dash="dash", line_color="#4c78a8")
    fig.update_layout(title=f"{dataset}: accuracy against the baseline (95 % paired interval, tolerance band)",
                      yaxis_title="accuracy, %", height=360, margin={"l": 60, "r": 150, "t": 60, "b": 60}, showlegend=False)
    return fig


def _latency_figure(dataset: str, rows: list[_Row]):
    import plotly.graph_objects as go

    fig = go.Figure()
    for row in rows:
        if row.latencies:
            fig.add_trace(go.Box(y=row.latencies, name=row.run.label, boxpoints=False))
    fig.update_layout(title=f"{dataset}: request latency per chip", yaxis_title="ms", height=340,
                      margin={"l": 60, "r": 30, "t": 60, "b": 60}, showlegend=False)
    return fig


def _rates_figure(dataset: str, rows: list[_Row]):
    import plotly.graph_objects as go

    labels, truncated, errors, retries = [], [], [], []
    for row in rows:
        s = row.result.serving
        if s is None:
            continue
        attempts = s.requests + sum(s.errors.values())
        labels.append(row.run.label)
        truncated.append(s.truncated_percent or 0.0)
        errors.append(round(100.0 * sum(s.errors.values()) / attempts, 2) if attempts else 0.0)
        retries.append(round(100.0 * sum(s.retries.values()) / s.requests, 2) if s.requests else 0.0)
    fig = go.Figure([
        go.Bar(name="answers cut by length, %", x=labels, y=truncated),
        go.Bar(name="failed attempts, % of attempts", x=labels, y=errors),
        go.Bar(name="retries per 100 answers", x=labels, y=retries),
    ])
    fig.update_layout(title=f"{dataset}: truncation and error rates", barmode="group", height=340,
                      margin={"l": 60, "r": 30, "t": 60, "b": 60}, legend={"orientation": "h", "y": -0.2})
    return fig


def _disagreement_html(rows: list[_Row]) -> str:
    compared = [r for r in rows if r.found is not None]
    if not compared:
        return "<p>No other chip to compare with the baseline on this dataset.</p>"
    head = ("<tr><th>chip</th><th>paired</th><th>both right</th><th>right→wrong</th><th>wrong→right</th><th>both wrong</th>"
            "<th>p (McNemar)</th><th>95 % CI of diff</th><th>identical responses</th><th>same verdict, other text</th></tr>")
    body = []
    for row in compared:
        d = row.found
        assert d is not None
        ci = "—" if d.diff_ci is None else f"[{d.diff_ci[0]:+.2f}, {d.diff_ci[1]:+.2f}]"
        p = "— (scores on a scale: higher on the baseline / here)" if d.scale else "—" if d.p_value is None else f"{d.p_value:.3g}"
        rate = "—" if d.agreement_rate is None else f"{d.identical_responses} ({d.agreement_rate:.1f} %)"
        body.append(f"<tr><th>{html.escape(row.run.label)}</th><td>{d.paired}</td><td>{d.both_right}</td>"
                    f'<td class="rw">{d.right_to_wrong}</td><td class="wr">{d.wrong_to_right}</td><td>{d.both_wrong}</td>'
                    f"<td>{p}</td><td>{ci}</td><td>{rate}</td><td>{d.same_verdict_different_text}</td></tr>")
    return f'<h3>Disagreements with the baseline</h3><table class="disagreement">{head}{"".join(body)}</table>'



def _flipped_html(row: _Row) -> str:
    d = row.found
    assert d is not None
    if not d.flipped:
        return f"<p>{html.escape(row.run.label)}: no flipped sample.</p>"
    items = []
    for s in d.flipped[:MAX_FLIPPED_SHOWN]:
        items.append(
            f'<details class="flipped" data-sample="{html.escape(s.id)}"><summary><code>{html.escape(s.id)}</code> '
            f'<span class="{"rw" if s.direction == RIGHT_TO_WRONG else "wr"}">{html.escape(s.direction)}</span> '
            f"target <code>{_short(s.target)}</code>, baseline <code>{_short(s.baseline_extracted)}</code>, "
            f"this chip <code>{_short(s.extracted)}</code></summary>"
            f'<div class="sample"><h4>prompt</h4><pre>{_show(s.prompt)}</pre>'
            f'<div class="pair"><div><h4>baseline ({html.escape(d.baseline)})</h4><pre class="response baseline">{_show(s.baseline_response)}</pre>'
            f"<p>extracted: <code>{_show(s.baseline_extracted)}</code></p></div>"
            f'<div><h4>{html.escape(d.run)}</h4><pre class="response run">{_show(s.response)}</pre>'
            f"<p>extracted: <code>{_show(s.extracted)}</code></p></div></div>"
            f"<p>target: <code>{_show(s.target)}</code></p></div></details>")
    more = len(d.flipped) - MAX_FLIPPED_SHOWN
    tail = f"<p>… and {more} more (flageval compare --json lists every one).</p>" if more > 0 else ""
    rw = sum(s.direction == RIGHT_TO_WRONG for s in d.flipped)
    return (f'<details class="flips"><summary>{html.escape(row.run.label)}: {len(d.flipped)} flipped sample(s) '
            f'({rw} right→wrong, {len(d.flipped) - rw} wrong→right)</summary>{"".join(items)}{tail}</details>')


def _serving_table(rows: list[_Row]) -> str:
    head = ("<tr><th>chip</th><th>requests</th><th>p50 ms</th><th>p90 ms</th><th>p99 ms</th><th>tokens/request</th>"
            "<th>tokens/s</th><th>cut by length</th><th>errors</th><th>retries</th><th>note</th></tr>")
    body = []
    for row in rows:
        s = row.result.serving
        if s is None:
            body.append(f'<tr><th>{html.escape(row.run.label)}</th><td colspan="10">no serving figures</td></tr>')
            continue
        kinds = lambda counts: html.escape(", ".join(f"{k} {v}" for k, v in counts.items()) or "0")
        cut = "—" if s.truncated_percent is None else f"{s.truncated} ({s.truncated_percent:.1f} %)"
        body.append(f"<tr><th>{html.escape(row.run.label)}</th><td>{s.requests}</td><td>{_num(s.latency_p50_ms)}</td>"
                    f"<td>{_num(s.latency_p90_ms)}</td><td>{_num(s.latency_p99_ms)}</td><td>{_num(s.output_tokens_per_request)}</td>"
                    f"<td>{_num(s.output_tokens_per_second)}</td><td>{cut}</td><td>{kinds(s.errors)}</td><td>{kinds(s.retries)}</td>"
                    f"<td>{html.escape(s.note)}</td></tr>")
    return f'<table class="serving">{head}{"".join(body)}</table>'


def _num(value: float | None) -> str:
    return "—" if value is None else f"{value:.1f}"


def _show(value: Any) -> str:
    if isinstance(value, list) and value and all(isinstance(m, dict) and "role" in m for m in value):
        value = "\n\n".join(f"[{m.get('role')}] {m.get('content') if isinstance(m.get('content'), str) else json.dumps(m.get('content'), ensure_ascii=False)}"
                            for m in value)
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False, indent=1)
    return html.escape(text)


def _short(value: Any, limit: int = 40) -> str:
    return html.escape(brief(value, limit))


_STYLE = """
body { font-family: system-ui, sans-serif; margin: 1.5em auto; max-width: 1200px; color: #222; padding: 0 1em; }
table { border-collapse: collapse; margin: 0.8em 0; font-size: 0.9em; }
th, td { border: 1px solid #ccc; padding: 0.3em 0.6em; text-align: right; }
th:first-child { text-align: left; }
td.ok { background: #e6f4e6; } td.bad { background: #fbe4e4; }
.rw { color: #b22; } .wr { color: #272; }
section { border-top: 2px solid #4c78a8; margin-top: 2em; }
details.flipped { border: 1px solid #ddd; margin: 0.3em 0; padding: 0.3em 0.6em; }
details.flipped summary { cursor: pointer; }
.pair { display: flex; gap: 1em; } .pair > div { flex: 1; min-width: 0; }
pre { background: #f6f6f6; padding: 0.5em; white-space: pre-wrap; word-break: break-word; max-height: 24em; overflow: auto; }
.chart { margin: 1em 0; }
details.flips { margin: 0.8em 0; } details.flips > summary { cursor: pointer; font-weight: 600; }
"""

_PAGE = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>{title}</title>
<style>{style}</style>
<script>{plotly}</script>
</head>
<body>
<h1>{heading}</h1>
{intro}
{summary}
{sections}
</body>
</html>
"""

