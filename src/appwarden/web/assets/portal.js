// Keeps each deadline's "… left" current while the page stays open. The page works without it:
// the server already wrote the text for the moment it answered. The server's clock is the one
// that counts (data-now), so the browser only measures how long the page has been open.
(function () {
  "use strict";
  var opened = Date.now();
  function plural(n, unit) { return n + " " + unit + (n === 1 ? "" : "s"); }
  function words(seconds) {
    var later = seconds > 0;
    var minutes = Math.floor(Math.abs(seconds) / 60);
    var days = Math.floor(minutes / 1440);
    var hours = Math.floor((minutes % 1440) / 60);
    var mins = minutes % 60;
    var parts;
    if (days) { parts = [plural(days, "day")].concat(hours ? [plural(hours, "hour")] : []); }
    else if (hours) { parts = [plural(hours, "hour")].concat(mins ? [plural(mins, "minute")] : []); }
    else if (mins) { parts = [plural(mins, "minute")]; }
    else { return later ? "less than a minute left" : "just passed"; }
    var text = parts.join(", ");
    return later ? text + " left" : "passed " + text + " ago";
  }
  function tick() {
    var nodes = document.querySelectorAll("[data-due][data-now]");
    for (var i = 0; i < nodes.length; i++) {
      var due = Date.parse(nodes[i].getAttribute("data-due"));
      var now = Date.parse(nodes[i].getAttribute("data-now")) + (Date.now() - opened);
      if (!isNaN(due) && !isNaN(now)) { nodes[i].textContent = words(Math.floor((due - now) / 1000)); }
    }
  }
  setInterval(tick, 30000);
})();
