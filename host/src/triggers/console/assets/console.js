// Remedy's console: keeps the page live. It listens to the server's event
// feed (/v1/events, same origin, the session cookie) and, when something
// happens, fetches this page again and swaps its <main>. No framework, no
// network beyond this server.
(function () {
  "use strict";
  var live = document.getElementById("live");
  var pending = null;
  var inFlight = false;

  function setLive(state, text) {
    if (!live) return;
    live.className = "live " + state;
    live.textContent = text;
  }

  function refresh() {
    pending = null;
    if (inFlight) { schedule(); return; }
    inFlight = true;
    fetch(window.location.href, { credentials: "same-origin", headers: { "Accept": "text/html" } })
      .then(function (r) { return r.ok ? r.text() : Promise.reject(r.status); })
      .then(function (html) {
        var doc = new DOMParser().parseFromString(html, "text/html");
        var next = doc.getElementById("main");
        var main = document.getElementById("main");
        // Keep what the operator is typing (a pause reason).
        var active = document.activeElement;
        if (next && main && !(active && active.tagName === "INPUT" && main.contains(active))) {
          main.innerHTML = next.innerHTML;
          document.body.dataset.refreshed = String(Number(document.body.dataset.refreshed || 0) + 1);
        }
      })
      .catch(function () { /* the next event tries again */ })
      .then(function () { inFlight = false; });
  }

  // At most one redraw per two seconds, however busy the service: a
  // console left open during an incident must not load the store.
  var last = 0;
  function schedule() {
    if (pending !== null) return;
    var wait = Math.max(250, 2000 - (Date.now() - last));
    pending = window.setTimeout(function () { last = Date.now(); refresh(); }, wait);
  }

  if (!window.EventSource) { setLive("off", "no live updates"); return; }
  // One feed per visible tab: a browser keeps six connections per server,
  // and tabs in the background need no live updates.
  var source = null;
  var connected = false;
  function open() {
    if (source) return;
    source = new EventSource("/v1/events");
    // On (re)connecting, fetch once: what happened between this page being
    // rendered and the feed being open (or while it was down) sent no event.
    source.addEventListener("ready", function () {
      setLive("on", "live");
      if (connected) { schedule(); } else { connected = true; refresh(); }
    });
    source.onerror = function () { setLive("off", "reconnecting…"); };
    ["run.started", "run.finished", "approval.pending", "approval.decided",
     "alert.received", "pause.changed", "lagged"].forEach(function (kind) {
      source.addEventListener(kind, schedule);
    });
  }
  function close() {
    if (!source) return;
    source.close();
    source = null;
    connected = true; // the next open catches up
    setLive("", "paused (tab hidden)");
  }
  document.addEventListener("visibilitychange", function () {
    if (document.hidden) { close(); } else { open(); }
  });
  if (!document.hidden) open();
})();
