// Keeps a tokens page's figures current from /tokens/events (server-sent events):
// #balance, #available, #held, #paid and #promotional, and the low-balance alerts
// (thresholds from #balance-alerts' data-low and data-critical). The browser's
// EventSource reconnects by itself when the server ends a stream.
(function () {
  "use strict";
  if (!("EventSource" in window)) return;
  var numbers = new Intl.NumberFormat("en-US");
  var figures = {
    balance: "balance",
    available: "available",
    held: "held",
    paidTokens: "paid",
    promotionalTokens: "promotional",
  };

  function showFigures(data) {
    Object.keys(figures).forEach(function (key) {
      var element = document.getElementById(figures[key]);
      if (element && typeof data[key] === "number") {
        element.textContent = numbers.format(data[key]);
      }
    });
  }

  function levelOf(available, box) {
    if (available < Number(box.dataset.critical)) return "critical";
    if (available < Number(box.dataset.low)) return "warning";
    return "";
  }

  function showAlert(available) {
    var box = document.getElementById("balance-alerts");
    if (!box || typeof available !== "number") return;
    var level = levelOf(available, box);
    var shown = box.querySelector("[data-available]");
    if (level === box.dataset.level) {
      // Same alert: update its figure without announcing it again.
      if (shown) shown.textContent = numbers.format(available);
      return;
    }
    box.dataset.level = level;
    box.replaceChildren();
    if (!level) return;
    var template = document.getElementById("alert-" + level);
    if (!template) return;
    var alert = template.content.cloneNode(true);
    alert.querySelector("[data-available]").textContent = numbers.format(available);
    box.appendChild(alert);
  }

  var source = new EventSource("/tokens/events");
  source.addEventListener("balance", function (event) {
    var data;
    try {
      data = JSON.parse(event.data);
    } catch (error) {
      return;
    }
    showFigures(data);
    showAlert(data.available);
  });
})();
