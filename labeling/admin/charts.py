"""The admin's charts, drawn in the browser by uPlot (vendored from npm in ``labeling/static/labeling/vendor/uplot``,
no CDN) from data the page carries as JSON (``chart``), so that hovering shows the values; what the raters
dashboard and the leaderboard chart; and the dashboard's sortable column headers."""

import re

from django.http import QueryDict
from django.templatetags.static import static
from django.utils.html import format_html, json_script
from django.utils.safestring import SafeString

UPLOT_VERSION = "1.6.32"


def chart_assets() -> SafeString:
    """The stylesheet and scripts a page with charts loads (all from our own static files)."""
    return format_html(
        '<link rel="stylesheet" href="{}"><script src="{}" defer></script><script src="{}" defer></script>',
        static("labeling/vendor/uplot/uPlot.min.css"), static("labeling/vendor/uplot/uPlot.iife.min.js"),
        static("labeling/charts.js"),
    )  # fmt: skip


def chart(
    chart_id: str, *, title: str, x: list, series: list[dict], x_label: str = "", y_label: str = "",
    width: int = 560, height: int = 160, **options,
) -> SafeString:  # fmt: skip
    """A figure that ``charts.js`` draws: ``x`` the shared x values, each series ``{"label", "values",
    "colour"}`` (``points_only`` for dots), ``options`` passed on (``bands``, ``x_names``, ``axes``, ``legend``)."""
    spec = {"x": x, "series": series, "x_label": x_label, "y_label": y_label, "width": width, "height": height,
            **options}  # fmt: skip
    return format_html(
        '<figure class="chart" data-chart="{}"><figcaption>{}</figcaption><div class="chart-area"></div>{}</figure>',
        chart_id, title, json_script(spec, chart_id),
    )  # fmt: skip


COLUMNS = [
    ("Rater", "rater"), ("Judgements", "judgements"), ("Gold score", "gold"), ("Position", "position"),
    ("Length", "length"), ("Median s", "seconds"), ("Too fast", "fast"), ("Ties", "ties"), ("All bad", "all_bad"),
    ("Pairwise", "pairwise"), ("Consensus", "consensus"), ("α", "alpha"), ("τ-b", "tau"),
    ("Reward model", "reward"), ("Flags", "flags"),
]  # fmt: skip


def weekly_charts(rater: str, weekly: list[dict]) -> SafeString:
    """The rater's judgements a week and gold score a week over the audited weeks, on one small chart (the gold
    score, 0 to 1, drawn scaled to the busiest week; the legend shows it as it is)."""
    counts = [week["judgements"] for week in weekly]
    busiest = max(counts, default=0) or 1
    gold = [None if week["gold_mean"] is None else round(week["gold_mean"] * busiest, 3) for week in weekly]
    return chart(
        f"weekly-{re.sub(r'[^A-Za-z0-9_-]', '_', rater)}", title="", x=list(range(1, len(weekly) + 1)),
        series=[{"label": "judgements", "values": counts, "colour": "#417690"},
                {"label": "gold score", "values": gold, "colour": "#c4861a", "scale_by": busiest}],
        x_label="week", width=200, height=70, axes=False, points=len(weekly) == 1,
    )  # fmt: skip


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


def leaderboard_chart(standings) -> SafeString | None:
    """Each fitted version's strength (0 is the reference) with the ends of its 95% interval, raw and
    length-controlled, strongest first; hovering a version shows its figures."""
    fitted = [row for row in standings if row.interval is not None]
    if not fitted:
        return None

    def values(pick) -> list[float | None]:
        return [None if pick(row) is None else round(pick(row), 4) for row in fitted]

    raw, controlled = "#417690", "#c4861a"
    series = [
        {"label": "strength", "values": values(lambda row: row.strength), "colour": raw, "points_only": True},
        {"label": "95% low", "values": values(lambda row: row.interval[0]), "colour": raw, "points_only": True},
        {"label": "95% high", "values": values(lambda row: row.interval[1]), "colour": raw, "points_only": True},
        {"label": "length-controlled", "values": values(lambda row: row.controlled), "colour": controlled,
         "points_only": True},
        {"label": "controlled low", "colour": controlled, "points_only": True,
         "values": values(lambda row: row.controlled_interval[0] if row.controlled_interval else None)},
        {"label": "controlled high", "colour": controlled, "points_only": True,
         "values": values(lambda row: row.controlled_interval[1] if row.controlled_interval else None)},
    ]  # fmt: skip
    return chart(
        "leaderboard-chart", title="Strength and 95% interval: raw (blue), length-controlled (orange); 0 is the "
        "reference.", x=list(range(len(fitted))), x_names=[row.name for row in fitted], series=series,
        x_label="version", y_label="strength", width=max(420, 90 * len(fitted)), height=220,
    )  # fmt: skip
