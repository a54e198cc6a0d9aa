"""Draw one trace's spans as a waterfall, in SVG (docs/img/trace.svg).

The spans come from OpenTelemetry's in-memory exporters of a real run
(tests/integration/test_otel.py draws the trace of its cross-process test
with it, and writes it to the path in ``JOB_MACHINE_TRACE_SVG`` when set):
each a mapping with ``name``, ``kind``, ``service``, ``span_id``,
``parent_id``, ``start`` and ``end`` (nanoseconds since the epoch). Rows
follow the tree (each span under its parent, siblings by start time); the
bars share one time axis, as Jaeger's timeline does.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from html import escape
from typing import Any

_ROW = 26
_LABEL = 330
_BAR = 560
_TOP = 40
_COLOURS = {"PRODUCER": "#4e79a7", "CONSUMER": "#f28e2b", "CLIENT": "#59a14f"}


def _tree(spans: Sequence[Mapping[str, Any]]) -> list[tuple[int, Mapping[str, Any]]]:
    """The spans in tree order, each with its depth."""
    ids = {s["span_id"] for s in spans}
    children: dict[str | None, list[Mapping[str, Any]]] = {}
    for s in spans:
        parent = s["parent_id"] if s["parent_id"] in ids else None
        children.setdefault(parent, []).append(s)
    ordered: list[tuple[int, Mapping[str, Any]]] = []

    def walk(parent: str | None, depth: int) -> None:
        for s in sorted(children.get(parent, []), key=lambda s: s["start"]):
            ordered.append((depth, s))
            walk(s["span_id"], depth + 1)

    walk(None, 0)
    return ordered


def waterfall(spans: Sequence[Mapping[str, Any]], title: str) -> str:
    """The SVG text of the spans' waterfall."""
    rows = _tree(spans)
    start = min(s["start"] for s in spans)
    total = max(max(s["end"] for s in spans) - start, 1)
    height = _TOP + _ROW * len(rows) + 30
    width = _LABEL + _BAR + 100
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        'font-family="sans-serif" font-size="12">',
        f'<rect width="{width}" height="{height}" fill="white"/>',
        f'<text x="10" y="22" font-size="14" font-weight="bold">{escape(title)}</text>',
    ]
    for tick in range(5):
        x = _LABEL + _BAR * tick / 4
        ms = total * tick / 4 / 1e6
        out.append(
            f'<line x1="{x:.1f}" y1="{_TOP - 6}" x2="{x:.1f}" y2="{height - 24}" stroke="#ddd"/>'
        )
        out.append(
            f'<text x="{x:.1f}" y="{height - 10}" text-anchor="middle" fill="#666">'
            f"{ms:.1f} ms</text>"
        )
    for n, (depth, s) in enumerate(rows):
        y = _TOP + n * _ROW
        x = _LABEL + _BAR * (s["start"] - start) / total
        w = max(_BAR * (s["end"] - s["start"]) / total, 2)
        colour = _COLOURS.get(s["kind"], "#9c755f")
        label = f"{s['service']}: {s['name']}"
        out.append(f'<text x="{10 + 14 * depth}" y="{y + 15}">{escape(label)}</text>')
        out.append(
            f'<rect x="{x:.1f}" y="{y + 3}" width="{w:.1f}" height="{_ROW - 8}" '
            f'rx="2" fill="{colour}"><title>{escape(s["kind"])}</title></rect>'
        )
        out.append(
            f'<text x="{x + w + 4:.1f}" y="{y + 15}" fill="#333">'
            f"{(s['end'] - s['start']) / 1e6:.2f} ms</text>"
        )
    out.append("</svg>")
    return "\n".join(out) + "\n"
