// Draws the dashboard's 30-day chart with Plotly as tokenbank serves it (from this
// machine), from the JSON the page carries in #daily-data, then folds the table of the
// same figures under it. Without Plotly (or JavaScript) the chart stays hidden and the
// table open.
(function () {
  "use strict";
  var source = document.getElementById("daily-data");
  var target = document.getElementById("daily-chart");
  var table = document.getElementById("days-table");
  if (!source || !target || typeof window.Plotly === "undefined") {
    return;
  }
  target.hidden = false;
  var days = JSON.parse(source.textContent || "[]");
  var x = days.map(function (d) { return d.day; });
  var traces = [
    { x: x, y: days.map(function (d) { return d.used; }), name: "Used", type: "bar",
      marker: { color: "#2456d6" } },
    { x: x, y: days.map(function (d) { return d.purchased; }), name: "Purchased", type: "bar",
      marker: { color: "#1a7f45" } }
  ];
  var layout = {
    barmode: "group",
    margin: { t: 16, r: 16, b: 48, l: 64 },
    yaxis: { title: { text: "Tokens" }, rangemode: "tozero" },
    legend: { orientation: "h" },
    paper_bgcolor: "rgba(0,0,0,0)",
    plot_bgcolor: "rgba(0,0,0,0)"
  };
  window.Plotly.newPlot(target, traces, layout, { displaylogo: false, responsive: true });
  if (table) {
    table.open = false;
  }
})();
