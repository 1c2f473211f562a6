// The dashboard refreshes itself: every part with data-refresh-url is fetched again every
// data-refresh-ms and its content replaced. No framework: a fetch and innerHTML.
// A part is not replaced while the pointer is over one of its forms (a click is not lost),
// and a page that stops refreshing says so in red rather than showing old colours as live.
(function () {
  "use strict";
  var state = document.getElementById("refresh-state");
  var lastOk = Date.now();

  function say(text, stale) {
    if (!state) { return; }
    state.textContent = text;
    state.classList.toggle("stale", stale);
  }

  function refresh(part) {
    if (document.hidden || part.querySelector("form:hover, button:focus")) { return; }
    fetch(part.dataset.refreshUrl, {credentials: "same-origin",
                                    headers: {"X-Requested-With": "fetch"}})
      .then(function (response) {
        if (response.redirected || !response.ok) {
          throw new Error(response.redirected ? "signed out: reload the page"
                                              : "HTTP " + response.status);
        }
        return response.text();
      })
      .then(function (html) {
        part.innerHTML = html;
        lastOk = Date.now();
        say("live, refreshed " + new Date().toLocaleTimeString(), false);
      })
      .catch(function (error) {
        var age = Math.round((Date.now() - lastOk) / 1000);
        say("NOT refreshed for " + age + " s (" + error.message + ")", true);
      });
  }

  document.querySelectorAll("[data-refresh-url]").forEach(function (part) {
    var every = parseInt(part.dataset.refreshMs, 10) || 2500;
    window.setInterval(function () { refresh(part); }, every);
  });
})();
