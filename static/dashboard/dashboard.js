// Live dashboard: a websocket snapshot plus events; falls back to polling when the socket drops.
// Every value from the server is written with textContent, never as HTML.
(function () {
  "use strict";
  const $ = (id) => document.getElementById(id);
  let pollTimer = null;

  function text(id, value) { $(id).textContent = value == null ? "" : String(value); }

  function row(cells, cls) {
    const tr = document.createElement("tr");
    cells.forEach((value, i) => {
      const td = document.createElement("td");
      td.textContent = value == null ? "" : String(value);
      if (cls && cls[i]) td.className = cls[i];
      tr.appendChild(td);
    });
    return tr;
  }

  function render(s) {
    text("server-status", s.experiment.status === "running" ? "running" : s.experiment.status);
    text("mode", s.mode + " mode");
    text("experiment", s.experiment.name);
    text("strategy", s.experiment.strategy + ", " + s.experiment.total_nodes + " nodes per round");
    const r = s.round;
    text("round-number", "Round " + r.number + " (" + r.status + ")");
    text("round-progress", r.progress.received + " of " + r.progress.required + " updates: " + r.progress.nodes.join(", "));
    text("round-deadline", r.deadline ? "deadline " + new Date(r.deadline).toLocaleTimeString() : "");
    text("model-version", "v" + s.model.version + " · " + s.model.size + " bytes");
    text("model-sha", s.model.sha256);
    $("model-download").href = "/api/models/" + s.model.version + "/download";
    $("model-json").href = "/api/models/" + s.model.version + "/download?format=json";
    const nodes = $("nodes").querySelector("tbody");
    nodes.replaceChildren(...s.nodes.map((n) => row(
      [n.node_id, n.address, n.status, n.last_seen ? new Date(n.last_seen).toLocaleTimeString() : "never", n.last_round, n.source],
      [null, null, n.status])));
    const rounds = $("rounds").querySelector("tbody");
    rounds.replaceChildren(...s.rounds.slice().reverse().map((x) => row([
      x.number, x.status, x.updates, x.metrics && x.metrics.loss != null ? Number(x.metrics.loss).toFixed(5) : "",
      x.model_version != null ? "v" + x.model_version : "", x.duration_s != null ? x.duration_s.toFixed(2) : ""])));
  }

  async function refresh() {
    try {
      const response = await fetch("/api/dashboard", { headers: { Accept: "application/json" } });
      if (response.ok) render(await response.json());
    } catch (e) { /* the next poll or the websocket will catch up */ }
  }

  function poll(on) {
    if (on && !pollTimer) pollTimer = setInterval(refresh, 3000);
    if (!on && pollTimer) { clearInterval(pollTimer); pollTimer = null; }
  }

  function connect(delay) {
    const ws = new WebSocket((location.protocol === "https:" ? "wss://" : "ws://") + location.host + "/ws/dashboard/");
    ws.onopen = () => { $("connection").textContent = "live"; $("connection").className = "badge live"; poll(false); delay = 1000; };
    ws.onmessage = (msg) => {
      const data = JSON.parse(msg.data);
      if (data.event === "snapshot") render(data.data); else refresh();
    };
    ws.onclose = () => {
      $("connection").textContent = "polling"; $("connection").className = "badge polling";
      poll(true);
      setTimeout(() => connect(Math.min(delay * 2, 30000)), delay);
    };
  }

  refresh();
  connect(1000);
})();
