// The run page stays live: each journal event of the run (server-sent, from the daemon's
// `runs.events --follow` stream) re-renders the status, graph, timeline and stage table from the
// server. No run data is ever interpreted here; the server renders and escapes it.
(function () {
  "use strict";
  var live = document.getElementById("live");
  if (!live || !live.dataset.stream) { return; }
  var timer = null;
  var busy = false;
  function refresh() {
    timer = null;
    if (busy) { schedule(); return; }
    busy = true;
    fetch(live.dataset.fragment, { credentials: "same-origin", cache: "no-store" })
      .then(function (r) { return r.ok ? r.text() : null; })
      .then(function (html) { if (html !== null) { live.innerHTML = html; } })
      .catch(function () {})
      .then(function () { busy = false; });
  }
  function schedule() { if (!timer) { timer = setTimeout(refresh, 120); } }
  var source = new EventSource(live.dataset.stream);
  source.addEventListener("journal", schedule);
  // Pieces of LLM answers: appended as text (never markup) to one block per stage.
  var panel = document.getElementById("llm-stream");
  var blocks = {};
  source.addEventListener("token", function (e) {
    if (!panel) { return; }
    var piece;
    try { piece = JSON.parse(e.data); } catch (err) { return; }
    var path = String(piece.path || "");
    var block = blocks[path];
    if (!block) {
      var box = document.createElement("div");
      var title = document.createElement("h3");
      title.className = "mono";
      title.textContent = path;
      block = document.createElement("pre");
      block.className = "tokens";
      block.setAttribute("data-path", path);
      box.appendChild(title);
      box.appendChild(block);
      document.getElementById("llm-stages").appendChild(box);
      blocks[path] = block;
      panel.hidden = false;
    }
    block.textContent += String(piece.text || "");
  });
  source.addEventListener("end", function () { source.close(); schedule(); });
  // Running stages show a growing duration between journal events.
  var tick = setInterval(function () {
    if (source.readyState === EventSource.CLOSED) { clearInterval(tick); return; }
    schedule();
  }, 5000);
})();
