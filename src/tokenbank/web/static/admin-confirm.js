// Asks before a form that takes something away (revoking a key, taking a pack off
// sale) is sent: its data-confirm attribute says what. Without JavaScript the form
// simply posts; the server checks the role and CSRF token either way.
(function () {
  "use strict";
  document.addEventListener("submit", function (event) {
    var form = event.target;
    var question = form instanceof HTMLFormElement ? form.getAttribute("data-confirm") : null;
    if (question && !window.confirm(question)) {
      event.preventDefault();
    }
  });
})();
