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

// The server card says what the run is doing: a finished or stopped run is not "running".
const RUN_WORDS = {
  running: "running", finished: "finished", stopped: "stopped", paused: "paused", initializing: "waiting for a model",
};

function renderHeader(s) {
  const e = s.experiment;
  text("experiment-name", e.name);
  text("server-status", Object.hasOwn(RUN_WORDS, e.status) ? RUN_WORDS[e.status] : e.status);
  $("server-dot").className = "dot run-" + e.status;
  text("mode", "server up · " + s.server.mode + " mode");
  const max = e.max_rounds ? " of " + e.max_rounds : "";
  text("run-status", s.rounds.filter((r) => r.status === "closed").length + max + " rounds done");
  text("finish-reason", e.status === "running" || !e.finish_reason ? "" : e.finish_reason);
  text("experiment", e.name);
  text("strategy", "strategy " + e.strategy + " · timeout " + num(e.round_timeout_s, 3) + " s, then " + e.on_timeout);
  text("total-nodes", "TOTAL_NODES " + e.total_nodes + " · quorum " + e.min_nodes);
}

function option(value, label, selected) {
  const o = document.createElement("option");
  o.value = value;
  o.textContent = label;
  o.selected = selected;
  return o;
}

// The switcher lists every experiment; the compare list every other one.
export function renderExperiments(s, compareName) {
  const label = (x) => x.name + " · " + x.strategy + " · " + x.status + " · " + x.rounds
    + (x.max_rounds ? "/" + x.max_rounds : "") + " rounds";
  const current = s.experiment.name;
  const list = s.experiments.some((x) => x.name === current) ? s.experiments
    : [{ name: current, strategy: s.experiment.strategy, status: s.experiment.status, rounds: 0, max_rounds: 0 }];
  $("experiment-select").replaceChildren(...list.map((x) => option(x.name, label(x), x.name === current)));
  $("compare-select").replaceChildren(option("", "nothing", !compareName),
    ...list.filter((x) => x.name !== current).map((x) => option(x.name, label(x), x.name === compareName)));
  const q = "?experiment=" + encodeURIComponent(current);
  $("export-csv").href = "/api/rounds" + q + "&format=csv";
  $("export-json").href = "/api/rounds" + q + "&format=json";
}

function value(v) {
  if (v === undefined) return "—";
  if (v !== null && typeof v === "object") return JSON.stringify(v);
  return typeof v === "number" ? num(v, 6) : String(v);
}

// What each run was trained with, side by side when two are compared; rows that differ are marked.
const PARAM_ROWS = [
  ["strategy", (e) => e.strategy],
  ["epochs", (e) => e.epochs],
  ["learning rate", (e) => num(e.learning_rate, 6)],
  ["batch size", (e) => (e.batch_size ? e.batch_size : "full batch")],
  ["partition", (e) => (e.partitions.length ? e.partitions.join(", ") : "not reported")],
  ["data", (e) => (e.datasets.length ? e.datasets.join(", ") : "not reported")],
  ["nodes", (e, s) => s.nodes.length + " (" + e.total_nodes + " per round, quorum " + e.min_nodes + ")"],
  ["rounds", (e, s) => s.rounds.filter((r) => r.status === "closed").length
    + (e.max_rounds ? " of " + e.max_rounds : ", no limit")],
  ["update encoding", (e) => e.update_encoding],
  ["server test set", (e) => e.server_eval || "none"],
];

// One row: the parameter, then its value in each run shown (one, or two when comparing).
function paramRow(name, values, className) {
  const tr = document.createElement("tr");
  tr.appendChild(cell(name, "param" + (className ? " " + className : "")));
  for (const v of values) tr.appendChild(cell(v));
  if (values.length > 1 && values.some((v) => v !== values[0])) tr.classList.add("differs");
  return tr;
}

export function renderParams(s, other) {
  text("params-a", s.experiment.name);
  $("params-b").hidden = !other;
  text("params-b", other ? other.experiment.name : "");
  const runs = other ? [s, other] : [s];
  const rows = PARAM_ROWS.map(([name, get]) => paramRow(name, runs.map((r) => String(get(r.experiment, r)))));
  // Each hyperparameter of either strategy on its own row, right after the strategy.
  const keys = [...new Set(runs.flatMap((r) => Object.keys(r.experiment.strategy_params)))];
  rows.splice(1, 0, ...keys.map((k) => paramRow(k, runs.map((r) => value(r.experiment.strategy_params[k])), "sub")));
  $("run-params").tBodies[0].replaceChildren(...rows);
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

function dataText(data) {
  if (!data || !data.data) return "—";
  const part = data.partition ? " " + data.partition + (data.part ? " part " + data.part : "") : "";
  return data.data + part + (data.train_rows != null ? " · " + data.train_rows + " rows" : "");
}

function countText(s, nowMs) {
  const statuses = s.nodes.map((n) => nodeStatus(n, nowMs, s.thresholds));
  const done = statuses.filter((x) => x === "done").length;
  return statuses.filter((x) => x === "online").length + " online" + (done ? " · " + done + " done" : "")
    + " of " + s.nodes.length;
}

function renderNodes(s, nowMs) {
  const table = $("nodes");
  const rows = s.nodes.map((n) => {
    const status = nodeStatus(n, nowMs, s.thresholds);
    const tr = row(table, [
      cell(n.node_id, "node-id"), cell(n.address || "—", "mono"), cell(status, "status " + status),
      cell(n.last_seen ? age((nowMs - Date.parse(n.last_seen)) / 1000) : "never", "seen"),
      cell(n.last_round == null ? "—" : n.last_round), cell(n.updates), cell(dataText(n.data)), cell(n.source)]);
    tr.dataset.node = n.node_id;
    tr.cells[3].title = n.last_seen ? new Date(n.last_seen).toLocaleString() : "";
    return tr;
  });
  table.tBodies[0].replaceChildren(...rows);
  $("nodes-empty").hidden = s.nodes.length > 0;
  text("nodes-count", countText(s, nowMs));
}

function renderRounds(s) {
  const table = $("rounds");
  const newest = s.rounds.slice().reverse();
  // The headline accuracy: the test set's when the server scores models, else the federated or validation one.
  const accuracy = s.charts.groups.fraction[0];
  text("rounds-accuracy", accuracy ? accuracy.replace(/_/g, " ") : "accuracy");
  table.tBodies[0].replaceChildren(...newest.map((x) => row(table, [
    cell(x.number), cell(x.status, "status " + x.status), cell(x.updates),
    cell(x.metrics && x.metrics.loss != null ? num(x.metrics.loss, 5) : "—"),
    cell(accuracy && x.metrics && x.metrics[accuracy] != null ? num(x.metrics[accuracy], 4) : "—"),
    cell(x.model_version != null ? "v" + x.model_version : "—"), cell(clock(x.opened_at)),
    cell(x.duration_s != null ? x.duration_s.toFixed(2) : "—"), cell(x.failure_reason || "")])));
}

// `other`: the snapshot of the experiment compared with this one (null for none); `compareName` its name.
export function render(s, nowMs, other, compareName) {
  renderHeader(s);
  renderExperiments(s, compareName);
  renderParams(s, other);
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
  for (const tr of $("nodes").tBodies[0].rows) {
    const n = byId.get(tr.dataset.node);
    if (!n) continue;
    const status = nodeStatus(n, nowMs, s.thresholds);
    const statusCell = tr.cells[2];
    if (statusCell.textContent !== status) {
      statusCell.textContent = status;
      statusCell.className = "status " + status;
    }
    const seen = n.last_seen ? age((nowMs - Date.parse(n.last_seen)) / 1000) : "never";
    if (tr.cells[3].textContent !== seen) tr.cells[3].textContent = seen;
  }
  text("nodes-count", countText(s, nowMs));
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
