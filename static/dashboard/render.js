// Writes a snapshot into the page. Every value is set with textContent (never innerHTML): node ids,
// addresses and metric names come from nodes and must show as text.
import { age, bytes, clock, countdown, nodeStatus, num } from "./format.js";

const $ = (id) => document.getElementById(id);

function text(id, value) {
  const el = $(id);
  const s = value == null ? "" : String(value);
  if (el.textContent !== s) el.textContent = s;
}

function cell(value, className) {
  const td = document.createElement("td");
  td.textContent = value == null ? "" : String(value);
  if (className) td.className = className;
  return td;
}

// Each cell carries its column name (the phone layout shows it as a label) and its header's classes
// ("opt": a column phones leave out).
function row(table, cells) {
  const heads = table.tHead.rows[0].cells;
  const tr = document.createElement("tr");
  cells.forEach((td, i) => {
    td.dataset.label = heads[i].textContent;
    td.classList.add(...heads[i].classList);
    tr.appendChild(td);
  });
  return tr;
}

function renderHeader(s) {
  text("experiment-name", s.experiment.name);
  text("server-status", s.server.status);
  $("server-dot").className = "dot ok";
  text("mode", s.server.mode + " mode");
  const max = s.experiment.max_rounds ? " of " + s.experiment.max_rounds : "";
  const done = s.rounds.filter((r) => r.status === "closed").length + max + " rounds done";
  text("run-status", s.experiment.status === "running" ? done : "run " + s.experiment.status + " · " + done);
  text("experiment", s.experiment.name);
  text("strategy", "strategy " + s.experiment.strategy + " · timeout " + num(s.experiment.round_timeout_s, 3)
    + " s, then " + s.experiment.on_timeout);
  text("total-nodes", "TOTAL_NODES " + s.experiment.total_nodes + " · quorum " + s.experiment.min_nodes);
}

function renderRound(s) {
  const r = s.round;
  text("round-number", r.number ? "Round " + r.number : "No round");
  text("round-status", r.status);
  $("round-status").className = "pill " + r.status;
  const p = r.progress;
  $("round-bar").style.width = Math.min(100, (100 * p.received) / Math.max(1, p.required)) + "%";
  text("round-progress", p.received + " of " + p.required + " nodes uploaded");
  const chips = p.nodes.map((id) => {
    const li = document.createElement("li");
    li.textContent = id;
    return li;
  });
  $("round-nodes").replaceChildren(...chips);
}

function renderModel(s) {
  const m = s.model;
  $("model-download").hidden = $("model-json").hidden = !m;
  if (!m) { // an experiment waiting for its first node's parameters
    text("model-version", "none yet");
    text("model-size", "waiting for the first node's initial parameters");
    text("model-sha", "");
    return;
  }
  text("model-version", "v" + m.version);
  text("model-size", bytes(m.size) + " · " + m.summary.count.toLocaleString() + " parameters · ‖θ‖ "
    + num(m.summary.norm));
  text("model-sha", m.sha256);
  $("model-download").href = m.download.safetensors;
  $("model-json").href = m.download.json;
  text("params-total", m.summary.layers.length + " tensors");
  const table = $("layers");
  table.tBodies[0].replaceChildren(...m.summary.layers.map((l) => row(table, [
    cell(l.name, "mono"), cell(l.shape.join(" × ")), cell(num(l.mean)), cell(num(l.std)), cell(num(l.norm))])));
}

function renderNodes(s, nowMs) {
  const table = $("nodes");
  const rows = s.nodes.map((n) => {
    const status = nodeStatus(n, nowMs, s.thresholds);
    const tr = row(table, [
      cell(n.node_id, "node-id"), cell(n.address || "—", "mono"), cell(status, "status " + status),
      cell(n.last_seen ? age((nowMs - Date.parse(n.last_seen)) / 1000) : "never", "seen"),
      cell(n.last_round == null ? "—" : n.last_round), cell(n.updates), cell(n.source)]);
    tr.dataset.node = n.node_id;
    tr.cells[3].title = n.last_seen ? new Date(n.last_seen).toLocaleString() : "";
    return tr;
  });
  table.tBodies[0].replaceChildren(...rows);
  $("nodes-empty").hidden = s.nodes.length > 0;
  const online = s.nodes.filter((n) => nodeStatus(n, nowMs, s.thresholds) === "online").length;
  text("nodes-count", online + " of " + s.nodes.length + " online");
}

function renderRounds(s) {
  const table = $("rounds");
  const newest = s.rounds.slice().reverse();
  table.tBodies[0].replaceChildren(...newest.map((x) => row(table, [
    cell(x.number), cell(x.status, "status " + x.status), cell(x.updates),
    cell(x.metrics && x.metrics.loss != null ? num(x.metrics.loss, 5) : "—"),
    cell(x.model_version != null ? "v" + x.model_version : "—"), cell(clock(x.opened_at)),
    cell(x.duration_s != null ? x.duration_s.toFixed(2) : "—"), cell(x.failure_reason || "")])));
}

export function render(s, nowMs) {
  renderHeader(s);
  renderRound(s);
  renderModel(s);
  renderNodes(s, nowMs);
  renderRounds(s);
  tick(s, nowMs);
}

// Once a second: the deadline countdown and every node's status and last-seen age.
export function tick(s, nowMs) {
  const r = s.round;
  if (r.status === "open" && r.deadline) {
    const left = (Date.parse(r.deadline) - nowMs) / 1000;
    text("round-deadline", left > 0 ? "deadline in " + countdown(left) + " (" + clock(r.deadline) + ")"
      : "deadline passed, waiting for the sweeper");
  } else {
    text("round-deadline", r.status === "aggregating" ? "aggregating the updates…" : "");
  }
  const byId = new Map(s.nodes.map((n) => [n.node_id, n]));
  let online = 0;
  for (const tr of $("nodes").tBodies[0].rows) {
    const n = byId.get(tr.dataset.node);
    if (!n) continue;
    const status = nodeStatus(n, nowMs, s.thresholds);
    if (status === "online") online += 1;
    const statusCell = tr.cells[2];
    if (statusCell.textContent !== status) {
      statusCell.textContent = status;
      statusCell.className = "status " + status;
    }
    const seen = n.last_seen ? age((nowMs - Date.parse(n.last_seen)) / 1000) : "never";
    if (tr.cells[3].textContent !== seen) tr.cells[3].textContent = seen;
  }
  text("nodes-count", online + " of " + s.nodes.length + " online");
}

export function banner(message, link) {
  const el = $("banner");
  if (!message) { el.hidden = true; el.replaceChildren(); return; }
  const parts = [document.createTextNode(message)];
  if (link) {
    const a = document.createElement("a");
    a.href = link.href;
    a.textContent = link.text;
    parts.push(document.createTextNode(" "), a);
  }
  el.replaceChildren(...parts);
  el.hidden = false;
}

export function connection(kind, label) {
  const el = $("connection");
  el.textContent = label;
  el.className = "badge " + kind;
  if (kind === "down") {
    $("server-dot").className = "dot down";
    text("server-status", "unreachable");
  }
}
