// Small progressive enhancements. Everything works without this file; no inline scripts (CSP).
"use strict";

document.documentElement.classList.add("js");

document.addEventListener("change", (event) => {
  // The language picker submits itself when JavaScript is on (its button is hidden then).
  const select = event.target.closest("select[data-autosubmit]");
  if (select && select.form) {
    select.form.requestSubmit();
  }
});

document.addEventListener("htmx:afterSettle", (event) => {
  // Draw the eye to the balance when htmx swapped a fresh value in.
  const balance = document.getElementById("balance");
  if (balance && event.detail && event.detail.elt === balance) {
    balance.classList.remove("flash");
    void balance.offsetWidth;
    balance.classList.add("flash");
  }
});
