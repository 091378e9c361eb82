// The admin's charts, drawn with uPlot (vendor/uplot) from the JSON each <figure class="chart" data-chart="ID">
// names (a <script type="application/json" id="ID"> element, labeling.admin.charts.chart). Hovering a chart shows
// the values under the cursor in its legend. The figure keeps its uPlot instance as `figure.chart`.
(function () {
  "use strict";

  function draw(figure) {
    const spec = JSON.parse(document.getElementById(figure.dataset.chart).textContent);
    const series = [{ label: spec.x_label }].concat(spec.series.map((line) => ({
      label: line.label,
      scale: line.scale || "y",
      stroke: line.colour,
      fill: line.fill || undefined,
      width: line.points_only ? 0 : 2,
      points: { show: Boolean(line.points_only || spec.points), size: 7, fill: line.colour },
      spanGaps: true,
      // A series drawn scaled to share an axis (scale_by) shows its own value in the legend.
      value: (self, value) => (value == null ? "-" : Number((line.scale_by ? value / line.scale_by : value).toPrecision(4)).toString()),
    })));
    const named = Array.isArray(spec.x_names);  // one x per named thing (versions): whole ticks, named
    const options = {
      width: spec.width,
      height: spec.height,
      series: series,
      scales: Object.assign(
        { x: named ? { time: false, range: [-0.5, spec.x_names.length - 0.5] } : { time: false } },
        Object.fromEntries((spec.right_axes || []).filter((axis) => axis.range).map((axis) => [axis.scale, { range: axis.range }])),
      ),
      axes: spec.axes === false ? [{ show: false }, { show: false }] : [
        named
          ? { label: spec.x_label, incrs: [1], values: (self, ticks) => ticks.map((tick) => spec.x_names[tick] || "") }
          : { label: spec.x_label },
        { label: spec.y_label },
      ].concat((spec.right_axes || []).map((axis) => ({ scale: axis.scale, label: axis.label, side: 1, grid: { show: false } }))),
      legend: { show: spec.legend !== false, live: true },
      cursor: { points: { size: 8 } },
      bands: spec.bands || [],
    };
    figure.chart = new uPlot(options, [spec.x].concat(spec.series.map((line) => line.values)), figure.querySelector(".chart-area"));
  }

  document.querySelectorAll("figure.chart[data-chart]").forEach(draw);
})();
