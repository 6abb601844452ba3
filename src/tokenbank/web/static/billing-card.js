// "Add a card" on the billing page: a SetupIntent from tokenbank, confirmed with
// Stripe.js's card element, then the card's id posted back to be kept for
// auto-recharge (Stripe's setup_intent.succeeded webhook saves it too). Stripe.js is
// only on the page when tokenbank is configured to load it; without it (or when it
// failed to load) the page keeps saying the card form is unavailable.
(function () {
  "use strict";
  var section = document.getElementById("card");
  var key = section && section.dataset.publishableKey;
  if (!section || !key || typeof window.Stripe !== "function") return;

  var stripe = window.Stripe(key);
  var card = stripe.elements().create("card");
  var message = document.getElementById("card-message");
  var button = document.getElementById("card-save");
  document.getElementById("card-unavailable").hidden = true;
  document.getElementById("card-form").hidden = false;
  card.mount("#card-element");

  function fail(text) {
    message.textContent = text;
    button.disabled = false;
  }

  function setupIntent() {
    return fetch("/settings/billing/setup-intent", {
      method: "POST",
      credentials: "same-origin",
      headers: { "X-CSRF-Token": section.dataset.csrf },
    }).then(function (response) {
      return response.json().then(function (body) {
        if (!response.ok) throw new Error(body.error || "tokenbank could not start");
        return body;
      });
    });
  }

  button.addEventListener("click", function () {
    button.disabled = true;
    message.textContent = "";
    setupIntent()
      .then(function (setup) {
        return stripe.confirmCardSetup(setup.clientSecret, { payment_method: { card: card } });
      })
      .then(function (result) {
        if (result.error) return fail(result.error.message);
        document.getElementById("payment_method_id").value = result.setupIntent.payment_method;
        document.getElementById("card-saved-form").submit();
      })
      .catch(function (error) {
        fail("The card could not be saved: " + error.message);
      });
  });
})();
