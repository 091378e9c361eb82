"""What the raters dashboard draws: small weekly charts as SVG polylines (attributes only, so that the content
security policy, which allows no inline style, has nothing to refuse), and its sortable column headers."""

from django.http import QueryDict

WIDTH, HEIGHT = 120, 28

COLUMNS = [
    ("Rater", "rater"), ("Judgements", "judgements"), ("Gold score", "gold"), ("Position", "position"),
    ("Length", "length"), ("Median s", "seconds"), ("Too fast", "fast"), ("Ties", "ties"), ("All bad", "all_bad"),
    ("Pairwise", "pairwise"), ("Consensus", "consensus"), ("α", "alpha"), ("τ-b", "tau"),
    ("Reward model", "reward"), ("Flags", "flags"),
]  # fmt: skip


def _points(values: list[float | None], top: float) -> str:
    """SVG polyline points for ``values`` spread across the chart, 0 at the bottom and ``top`` at the top; a
    missing value is left out."""
    if not values:
        return ""
    if len(values) == 1:  # one week: a flat line across, so that it shows
        values = values * 2
    step = WIDTH / max(len(values) - 1, 1)
    scale = (HEIGHT - 2) / top if top > 0 else 0.0
    return " ".join(
        f"{index * step:.1f},{HEIGHT - 1 - value * scale:.1f}"
        for index, value in enumerate(values)
        if value is not None
    )


def weekly_charts(weekly: list[dict]) -> dict:
    """The throughput (judgements a week, scaled to the busiest week) and gold score (0 to 1) charts."""
    counts = [week["judgements"] for week in weekly]
    return {
        "width": WIDTH,
        "height": HEIGHT,
        "throughput": _points(counts, max(counts, default=0)),
        "gold": _points([week["gold_mean"] for week in weekly], 1.0),
        "weeks": len(weekly),
        "busiest": max(counts, default=0),
    }


def sortable_columns(query: QueryDict, sort: str) -> list[dict]:
    """Each column header's label and the link that sorts by it (again: the other way round)."""
    headers = []
    for label, key in COLUMNS:
        params = query.copy()
        params["o"] = f"-{key}" if sort == key else key
        params.pop("p", None)
        arrow = " ▲" if sort == key else " ▼" if sort == f"-{key}" else ""
        headers.append({"label": label, "url": "?" + params.urlencode(), "arrow": arrow})
    return headers


def interval_chart(
    standings, width: int = 420, row_height: int = 22, margin: int = 12, labels: int = 160
) -> dict | None:
    """Each fitted version's strength and 95% interval as a dot on a line, the raw fit above the length-controlled
    one, on a shared axis with a rule at 0 (the reference); names in the ``labels`` pixels on the left."""
    fitted = [row for row in standings if row.interval is not None]
    if not fitted:
        return None
    ends = [0.0]
    for row in fitted:
        ends.extend(row.interval)
        if row.controlled_interval is not None:
            ends.extend(row.controlled_interval)
    low, high = min(ends), max(ends)
    span = (high - low) or 1.0

    def x(value: float) -> float:
        return round(labels + margin + (value - low) / span * (width - 2 * margin), 1)

    rows = []
    for index, row in enumerate(fitted):
        top = index * row_height
        marks = [("raw", row.strength, row.interval, top + 7)]
        if row.controlled_interval is not None:
            marks.append(("controlled", row.controlled, row.controlled_interval, top + 15))
        rows.append(
            {
                "name": row.name,
                "y": top + 11,
                "marks": [
                    {"kind": kind, "x": x(point), "x1": x(interval[0]), "x2": x(interval[1]), "y": y}
                    for kind, point, interval, y in marks
                ],
            }
        )
    height = len(fitted) * row_height
    return {
        "width": labels + width,
        "height": height + 20,
        "plot_height": height,
        "axis_y": height + 16,
        "low_x": labels,
        "high_x": labels + width - 30,
        "zero": x(0.0),
        "rows": rows,
        "low": round(low, 2),
        "high": round(high, 2),
    }
