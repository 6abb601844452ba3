// tokenbank's balance widget: <tokenbank-balance> on an app's own page.
//
//   <script src="https://tokens.example.com/static/widget.js" defer></script>
//   <tokenbank-balance></tokenbank-balance>              (option A: the session cookie)
//   <tokenbank-balance token="eyJ..."></tokenbank-balance> (option B: a user JWT)
//
// It shows "N tokens", and a "Buy more" link when the balance is low. The tokenbank it
// asks is the one that served this script (or the element's `src-url` attribute).
(function () {
  "use strict";
  var script = document.currentScript;
  var defaultBase = script ? new URL(script.src).origin : "";

  class TokenbankBalance extends HTMLElement {
    connectedCallback() {
      this.base = this.getAttribute("src-url") || defaultBase;
      this.render("…", null);
      this.refresh();
      var seconds = parseInt(this.getAttribute("refresh-seconds") || "30", 10);
      this.timer = setInterval(this.refresh.bind(this), Math.max(seconds, 5) * 1000);
    }
    disconnectedCallback() {
      clearInterval(this.timer);
    }
    refresh() {
      var headers = {};
      var token = this.getAttribute("token");
      if (token) headers.Authorization = "Bearer " + token;
      var self = this;
      fetch(this.base + "/api/widget/balance", { credentials: "include", headers: headers })
        .then(function (answer) {
          return answer.ok ? answer.json() : Promise.reject(answer.status);
        })
        .then(function (body) {
          self.render(body.data.balance.toLocaleString() + " tokens",
                      body.data.low ? body.data.buyTokensUrl : null);
        })
        .catch(function () {
          self.render("tokens unavailable", null);
        });
    }
    render(text, buyUrl) {
      this.textContent = "";
      var amount = document.createElement("span");
      amount.className = "tokenbank-amount";
      amount.textContent = text;
      this.appendChild(amount);
      if (buyUrl) {
        var link = document.createElement("a");
        link.href = buyUrl;
        link.textContent = "Buy more";
        link.className = "tokenbank-buy";
        link.style.marginLeft = "0.5rem";
        this.appendChild(link);
      }
    }
  }

  if (!customElements.get("tokenbank-balance")) {
    customElements.define("tokenbank-balance", TokenbankBalance);
  }
})();
