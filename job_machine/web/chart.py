"""The geometry of the overview's 24-hour chart (a server-rendered SVG)."""

from __future__ import annotations

from typing import Any

from ..task import HourStats


def _chart(history: list[HourStats], width: int = 1100, height: int = 220) -> dict[str, Any]:
    """Coordinates of the 24-hour chart (server-rendered SVG): a stacked
    bar of done and failed tasks per hour, and the scale."""
    top = max([h.done + h.failed for h in history] + [1])
    scale = 1
    while scale * 10 < top:
        scale *= 10
    # A round top value, not far above the highest bar: 4, 8, 120, 2,500...
    ceiling = next(
        int(m * scale)
        for m in (1, 1.2, 1.5, 2, 2.5, 3, 4, 5, 6, 8, 10)
        if m * scale >= top and float(m * scale).is_integer()
    )
    plot_h, left, bottom = height - 24, 40, height - 20
    slot = (width - left) / max(len(history), 1)
    bars = []
    for i, h in enumerate(history):
        done_h = h.done / ceiling * plot_h
        failed_h = h.failed / ceiling * plot_h
        local = h.hour.astimezone()
        bars.append(
            {
                "x": round(left + i * slot + 2, 1),
                "w": round(slot - 4, 1),
                "done_y": round(bottom - done_h, 1),
                "done_h": round(done_h, 1),
                "failed_y": round(bottom - done_h - failed_h, 1),
                "failed_h": round(failed_h, 1),
                "label": local.strftime("%H:00") if i % 3 == 0 else "",
                "label_x": round(left + i * slot + slot / 2, 1),
                "title": f"{local:%Y-%m-%d %H:00}: {h.done:,} done, {h.failed:,} failed",
            }
        )
    return {
        "width": width,
        "height": height,
        "bars": bars,
        "ceiling": ceiling,
        "left": left,
        "top_y": bottom - plot_h,
        "mid_y": bottom - plot_h / 2,
        "bottom": bottom,
        "done": sum(h.done for h in history),
        "failed": sum(h.failed for h in history),
    }
