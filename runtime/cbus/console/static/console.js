// cbus console: progressive enhancement only; every page works without it.
// An element with data-refresh="SECONDS" is fetched again and swapped in place.
(function () {
  "use strict";
  var box = document.querySelector("[data-refresh]");
  if (!box || !window.fetch || !window.DOMParser) return;
  var seconds = Math.max(1, parseInt(box.getAttribute("data-refresh"), 10) || 5);
  function refresh() {
    fetch(window.location.href, { credentials: "same-origin", headers: { Accept: "text/html" } })
      .then(function (r) { return r.ok ? r.text() : Promise.reject(r.status); })
      .then(function (html) {
        var fresh = new DOMParser().parseFromString(html, "text/html").getElementById(box.id);
        if (fresh) { box.replaceWith(fresh); box = fresh; }
        box.setAttribute("data-refreshed", String(Date.now()));
      })
      .catch(function () { /* keep the last numbers; try again next time */ })
      .then(function () { window.setTimeout(refresh, seconds * 1000); });
  }
  window.setTimeout(refresh, seconds * 1000);
})();
