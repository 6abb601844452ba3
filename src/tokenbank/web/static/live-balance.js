// Keeps a tokens page's figures current from /tokens/events (server-sent events):
// #balance, #available, #held, #paid and #promotional, and the low-balance alerts
// (thresholds from #balance-alerts' data-low and data-critical), and the list of
// recent alerts (#recent-alerts) when a new one is written. The browser's
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
    refreshGrants(data);
  });

  // The grants table is drawn by the server: when the paid or promotional tokens
  // change (a purchase, a grant, an expiry), the page's own #grants is fetched again.
  var grantsSeen = null;
  function refreshGrants(data) {
    var seen = data.paidTokens + "/" + data.promotionalTokens;
    if (grantsSeen === null || seen === grantsSeen) {
      grantsSeen = seen;
      return;
    }
    grantsSeen = seen;
    var current = document.getElementById("grants");
    if (!current || !window.fetch || !window.DOMParser) return;
    fetch(window.location.pathname, { credentials: "same-origin" })
      .then(function (answer) {
        return answer.ok ? answer.text() : Promise.reject(answer.status);
      })
      .then(function (html) {
        var fresh = new DOMParser().parseFromString(html, "text/html").getElementById("grants");
        if (fresh) current.replaceChildren.apply(current, Array.from(fresh.childNodes));
      })
      .catch(function () {});
  }

  // The recent alerts (balance low or critical, suspended, a purchase done ...), as the
  // server wrote them: text only, never markup.
  function showRecentAlerts(alerts) {
    var section = document.getElementById("recent-alerts");
    if (!section || !Array.isArray(alerts)) return;
    var list = section.querySelector("ul");
    list.replaceChildren();
    alerts.forEach(function (alert) {
      var item = document.createElement("li");
      item.dataset.type = String(alert.type);
      var time = document.createElement("time");
      time.dateTime = String(alert.createdAt);
      time.textContent = String(alert.shownAt);
      item.appendChild(time);
      item.appendChild(document.createTextNode(" " + String(alert.text)));
      list.appendChild(item);
    });
    section.hidden = alerts.length === 0;
  }

  source.addEventListener("alerts", function (event) {
    try {
      showRecentAlerts(JSON.parse(event.data));
    } catch (error) {
      return;
    }
  });
})();
