"""The A/B view: a comparison as HTML and a figure, and ``ComparePanel`` for notebooks.

The verdicts themselves are ``emailwb.quality.compare``; this is how they are shown.
"""

from __future__ import annotations

from html import escape
from typing import TYPE_CHECKING, Any

from emailwb.errors import ProcessingError
from emailwb.quality.compare import Comparison, compare_runs, fmt_number
from emailwb.store import runs

if TYPE_CHECKING:
    from emailwb.store.database import Store


# --- presentation ------------------------------------------------------------------------------
_VERDICT_COLOUR = {"non-inferior": "#1a7f37", "inferior": "#cf222e", "inconclusive": "#9a6700"}


def comparison_html(comp: Comparison | dict[str, Any]) -> str:
    """A comparison as HTML tables (every value escaped): verdict, metrics, agreement, speed."""
    c = comp.as_dict() if isinstance(comp, Comparison) else comp
    colour = _VERDICT_COLOUR.get(c["verdict"], "#333")
    head = (
        f"<div class='emailwb-verdict' data-verdict='{escape(c['verdict'])}'>"
        f"<b>A</b> = {escape(c['run_a'])}, <b>B</b> = {escape(c['run_b'])}: "
        f"{c['pairs']} paired results over {c['emails']} emails, margin {c['margin']:g}<br>"
        f"<span style='font-size:18px;font-weight:700;color:{colour}'>"
        f"{escape(c['verdict'].upper())}</span> {escape(c['explanation'])}</div>"
    )
    rows = "".join(
        f"<tr><td>{escape(m['metric'])}{' *' if m['in_verdict'] else ''}</td><td>{m['n']}</td>"
        f"<td>{fmt_number(m['mean_a'])}</td><td>{fmt_number(m['mean_b'])}</td><td>{fmt_number(m['delta'], '+')}</td>"
        f"<td>[{fmt_number(m['low'], '+')}, {fmt_number(m['high'], '+')}]</td>"
        f"<td title='{escape(m['explanation'])}'>{escape(m['verdict'] or '')}</td></tr>"
        for m in c["metrics"]
    )
    metrics = (
        "<table class='emailwb-metrics'><thead><tr><th>metric</th><th>n</th><th>A</th>"
        "<th>B</th><th>B - A</th><th>95% CI</th><th>verdict</th></tr></thead>"
        f"<tbody>{rows}</tbody></table><small>* part of the verdict</small>"
    )
    agree = "".join(
        f"<tr><td>{escape(k)}</td><td>{escape(a['kind'])}</td><td>{a['n']}</td>"
        f"<td>{fmt_number(a['mean'])}</td><td>[{fmt_number(a['low'])}, {fmt_number(a['high'])}]</td></tr>"
        for k, a in c["agreement"].items()
    )
    agreement = (
        "<table class='emailwb-agreement'><thead><tr><th>field</th><th>match</th>"
        "<th>n</th><th>agreement</th><th>95% CI</th></tr></thead>"
        f"<tbody>{agree}</tbody></table>"
    )
    sp = "".join(
        f"<tr><td>{tag}</td><td>{escape(str(s.get('run')))}</td><td>{s.get('units')}</td>"
        f"<td>{s.get('emails')}</td><td>{fmt_number(s.get('emails_per_min'), d=1)}</td>"
        f"<td>{fmt_number(s.get('latency_p50'), d=2)}</td><td>{fmt_number(s.get('latency_p95'), d=2)}</td></tr>"
        for tag, s in (("A", c["speed"].get("a", {})), ("B", c["speed"].get("b", {})))
    )
    speed_html = (
        "<table class='emailwb-speed'><thead><tr><th></th><th>run</th><th>units</th>"
        "<th>emails</th><th>emails/min</th><th>latency p50 s</th><th>p95 s</th></tr>"
        f"</thead><tbody>{sp}</tbody></table>"
    )
    return (
        f"{head}<h4>Quality metrics (paired, B - A)</h4>{metrics}"
        f"<h4>Field agreement</h4>{agreement}<h4>Speed</h4>{speed_html}"
    )


def comparison_figure(comp: Comparison | dict[str, Any]) -> Any:
    """Plotly: each metric's B - A with its interval, the -margin line, verdict colours."""
    import plotly.graph_objects as go

    c = comp.as_dict() if isinstance(comp, Comparison) else comp
    ms = [
        m
        for m in c["metrics"]
        if m["delta"] is not None
        and m["metric"] != "response_chars"
        and m["metric"] not in ("ungrounded_total", "amounts_missed")
    ]
    fig = go.Figure(
        go.Scatter(
            x=[m["delta"] for m in ms],
            y=[m["metric"] for m in ms],
            mode="markers",
            marker={
                "size": 10,
                "color": [_VERDICT_COLOUR.get(m["verdict"] or "", "#888") for m in ms],
            },
            error_x={
                "type": "data",
                "symmetric": False,
                "array": [m["high"] - m["delta"] for m in ms],
                "arrayminus": [m["delta"] - m["low"] for m in ms],
            },
        )
    )
    fig.add_vline(
        x=-c["margin"],
        line_dash="dash",
        line_color="#cf222e",
        annotation_text=f"-margin {c['margin']:g}",
    )
    fig.add_vline(x=0, line_color="#888")
    fig.update_layout(
        title=f"B - A per metric ({c['run_b']} vs {c['run_a']})",
        xaxis_title="B - A (higher is better, except counts)",
        height=420,
        margin={"l": 170, "r": 20, "t": 50, "b": 40},
    )
    return fig


class ComparePanel:
    """Pick runs A and B and a margin, press Compare: verdict, tables and a chart.

    A plain object around ipywidgets (tests drive ``compare()`` directly); errors of the
    button's callback land in ``errors`` (an Output widget), never silently.
    """

    def __init__(
        self,
        store: Store,
        *,
        run_a: str | None = None,
        run_b: str | None = None,
        margin: float = 0.05,
    ) -> None:
        import ipywidgets as w

        self.store = store
        names = [r.name for r in runs.list_runs(store)]
        self.run_a = w.Dropdown(
            options=names, value=run_a or (names[0] if names else None), description="A (baseline)"
        )
        self.run_b = w.Dropdown(
            options=names,
            value=run_b or (names[-1] if names else None),
            description="B (candidate)",
        )
        self.margin = w.BoundedFloatText(
            value=margin, min=0.0, max=1.0, step=0.01, description="margin"
        )
        self.button = w.Button(description="Compare", button_style="primary")
        self.result = w.HTML("<i>pick A and B, then press Compare</i>")
        self.errors = w.Output()
        self.comparison: Comparison | None = None
        self.button.on_click(self._on_click)
        self.widget = w.VBox(
            [w.HBox([self.run_a, self.run_b, self.margin, self.button]), self.result, self.errors]
        )

    def _repr_mimebundle_(self, **kwargs: Any) -> Any:
        return self.widget._repr_mimebundle_(**kwargs)

    def compare(self) -> Comparison:
        """Compare the selected runs now and show the result."""
        if not self.run_a.value or not self.run_b.value:
            raise ProcessingError("pick two runs first", hint="run a baseline and a candidate")
        self.comparison = compare_runs(
            self.store, self.run_a.value, self.run_b.value, margin=float(self.margin.value)
        )
        self.result.value = comparison_html(self.comparison)
        return self.comparison

    def figure(self) -> Any:
        """The chart of the latest comparison."""
        if self.comparison is None:
            raise ProcessingError("nothing compared yet", hint="press Compare (or call compare())")
        return comparison_figure(self.comparison)

    def _on_click(self, _button: Any = None) -> None:
        try:
            self.compare()
        except Exception as exc:
            self.errors.append_stderr(f"compare failed: {type(exc).__name__}: {exc}\n")
