// Refreshes the overview's panel every 5 seconds without reloading the page.
(function () {
  var panel = document.getElementById("panel");
  if (!panel) { return; }
  var url = panel.getAttribute("data-refresh");
  setInterval(function () {
    fetch(url, { credentials: "same-origin", cache: "no-store" })
      .then(function (r) { return r.ok ? r.text() : Promise.reject(r.status); })
      .then(function (html) { panel.innerHTML = html; })
      .catch(function () {});
  }, 5000);
})();
