// Draws the usage page's charts with plotly.js (served by tokenbank from the plotly
// package, /static/vendor/plotly.min.js) from the JSON the page embeds in
// #usage-data. Without plotly.js the tables below the charts carry the same numbers.
(function () {
  "use strict";
  var source = document.getElementById("usage-data");
  if (!source || typeof window.Plotly === "undefined") return;
  var usage;
  try {
    usage = JSON.parse(source.textContent);
  } catch (error) {
    return;
  }

  function traces(series) {
    return Object.keys(series).map(function (name) {
      // Model names come from apps: plotly reads tags in trace names, so none pass.
      var label = name.replace(/[<>&%{}]/g, "");
      return {
        type: "bar",
        name: label,
        x: usage.days,
        y: series[name],
        hovertemplate: "%{x}: %{y:,} tokens<extra>" + label + "</extra>",
      };
    });
  }

  function draw(id, series) {
    var element = document.getElementById(id);
    if (!element || Object.keys(series).length === 0) return;
    element.replaceChildren();
    element.classList.add("drawn");
    window.Plotly.newPlot(
      element,
      traces(series),
      {
        barmode: "stack",
        margin: { t: 10, r: 10, b: 50, l: 70 },
        xaxis: { type: "date", tickformat: "%b %d" },
        yaxis: { title: { text: "tokens" }, tickformat: "," },
        legend: { orientation: "h" },
        font: { family: "system-ui, sans-serif" },
      },
      { displaylogo: false, responsive: true }
    );
  }

  draw("chart-by-type", usage.byType);
  draw("chart-by-model", usage.byModel);
})();
