// Live dashboard: a websocket snapshot plus events pushed on commit; polls /api/dashboard while the
// socket is down and reconnects with backoff. A second experiment can be compared: its snapshot is
// fetched beside the first and drawn dashed on the same charts.
import { Charts } from "./charts.js";
import { banner, connection, render, tick } from "./render.js";

const params = new URLSearchParams(location.search);
const experiment = params.get("experiment");
const query = experiment ? "?experiment=" + encodeURIComponent(experiment) : "";
const SNAPSHOT_URL = "/api/dashboard" + query;
const SOCKET_URL = (location.protocol === "https:" ? "wss://" : "ws://") + location.host + "/ws/dashboard/" + query;
const POLL_MS = 3000;
const MAX_BACKOFF_MS = 30000;
const LOG_KEY = "fedsite.lossLogScale";

const charts = new Charts();
let state = null;
let compareName = params.get("compare") || null;
let compared = null; // the compared experiment's snapshot
let clockOffsetMs = 0; // server time minus this browser's time, so statuses follow the server's clock
let live = false;
let requested = 0;
let applied = 0;
let refreshTimer = null;
let compareTimer = null;
let pollTimer = null;

const serverNow = () => Date.now() + clockOffsetMs;

function redraw() {
  render(state, serverNow(), compared, compareName);
  charts.update(state, compared);
}

function show(snapshot) {
  clockOffsetMs = Date.parse(snapshot.server.now) - Date.now();
  state = snapshot;
  banner(null);
  if (compareName === state.experiment.name) compareName = null; // comparing a run with itself shows nothing
  redraw();
}

// Responses can overtake each other; only a newer request may replace what is shown.
async function refresh() {
  const id = ++requested;
  try {
    const response = await fetch(SNAPSHOT_URL, { headers: { Accept: "application/json" } });
    const body = await response.json();
    if (id < applied) return;
    applied = id;
    if (response.ok) {
      show(body);
      if (!live) connection("polling", "polling");
    } else if (body.error === "login_required") {
      const next = encodeURIComponent(location.pathname + location.search);
      banner("This dashboard needs a login.", { href: "/admin/login/?next=" + next, text: "Log in" });
    } else {
      banner(body.detail || "The server answered " + response.status + ".");
    }
  } catch (e) {
    if (!live) connection("down", "server unreachable");
  }
  refreshCompared();
}

let compareRequested = 0;

// The compared experiment's snapshot; dropped (with a banner) if it no longer exists.
async function refreshCompared() {
  const name = compareName;
  const id = ++compareRequested;
  if (!name) {
    if (compared) { compared = null; if (state) redraw(); }
    return;
  }
  try {
    const response = await fetch("/api/dashboard?experiment=" + encodeURIComponent(name),
      { headers: { Accept: "application/json" } });
    const body = await response.json();
    if (id !== compareRequested || name !== compareName) return;
    if (response.ok) {
      compared = body;
    } else {
      compared = null;
      compareName = null;
      banner(body.detail || "Cannot compare with " + name + ".");
    }
    if (state) redraw();
  } catch (e) {
    // the main snapshot's refresh reports an unreachable server
  }
}

// At most one fetch per quarter second, however fast events come (a steady stream must not starve it).
function refreshSoon() {
  if (refreshTimer) return;
  refreshTimer = setTimeout(() => { refreshTimer = null; refresh(); }, 250);
}

function refreshComparedSoon() {
  if (compareTimer) return;
  compareTimer = setTimeout(() => { compareTimer = null; refreshCompared(); }, 250);
}

// Live: a slow refresh still picks up registrations and last contacts, which send no event.
function schedulePoll() {
  clearTimeout(pollTimer);
  const staleMs = state ? state.thresholds.stale_s * 1000 : 60000;
  const every = live ? Math.min(15000, Math.max(2000, staleMs / 2)) : POLL_MS;
  pollTimer = setTimeout(async () => { await refresh(); schedulePoll(); }, every);
}

// Apply what an event says at once, then fetch the full picture.
function apply(event) {
  if (!state) return;
  if (event.experiment && event.experiment !== state.experiment.name) {
    if (event.experiment === compareName) refreshComparedSoon();
    else if (event.event.startsWith("run.") || event.event === "round.closed") refreshSoon(); // the switcher's list
    return;
  }
  const d = event.data || {};
  if (event.event === "update.received" && d.round === state.round.number) {
    const p = state.round.progress;
    p.received = d.received;
    if (!p.nodes.includes(d.node)) p.nodes.push(d.node);
    const node = state.nodes.find((n) => n.node_id === d.node);
    if (node) { node.last_seen = new Date(serverNow()).toISOString(); node.last_round = d.round; }
  } else if (event.event === "round.opened") {
    Object.assign(state.round, { number: d.round, status: "open", model_version: d.model_version });
    Object.assign(state.round.progress, { received: 0, nodes: [] });
  } else if (event.event === "round.closed" || event.event === "round.failed") {
    if (d.round === state.round.number) state.round.status = event.event === "round.closed" ? "closed" : "failed";
  } else if (event.event === "round.extended" && d.round === state.round.number) {
    state.round.deadline = d.deadline;
  } else if (event.event.startsWith("node.")) {
    // Discovery pushes (etcd lease seen or lost) carry the node's fields; a new node comes with the fetch.
    const node = state.nodes.find((n) => n.node_id === d.node_id);
    if (node) {
      for (const key of ["address", "source", "discovery_alive"]) if (key in d) node[key] = d[key];
    }
  }
  render(state, serverNow(), compared, compareName);
  refreshSoon();
}

// Live means the server sent a snapshot on this socket, not merely that a socket opened.
function connect(delay) {
  const ws = new WebSocket(SOCKET_URL);
  ws.onmessage = (msg) => {
    const message = JSON.parse(msg.data);
    if (message.event === "snapshot") {
      show(message.data);
      if (!live) {
        live = true;
        delay = 1000;
        connection("live", "live");
        schedulePoll();
      }
    } else if (message.event === "error") {
      banner(message.data.detail);
    } else {
      apply(message);
    }
  };
  ws.onclose = () => {
    const wasLive = live;
    live = false;
    if (wasLive) {
      connection("polling", "reconnecting…");
      refresh();
    }
    schedulePoll();
    const wait = delay + Math.random() * 500;
    setTimeout(() => connect(Math.min(delay * 2, MAX_BACKOFF_MS)), wait);
  };
}

// Switching experiments loads the page for that one (its own websocket query); comparing keeps this page.
// Switching to the compared experiment swaps the two.
document.getElementById("experiment-select").addEventListener("change", (e) => {
  const next = new URLSearchParams({ experiment: e.target.value });
  const keep = compareName === e.target.value && state ? state.experiment.name : compareName;
  if (keep && keep !== e.target.value) next.set("compare", keep);
  location.search = next.toString();
});
document.getElementById("compare-select").addEventListener("change", (e) => {
  compareName = e.target.value || null;
  const url = new URL(location.href);
  if (compareName) url.searchParams.set("compare", compareName); else url.searchParams.delete("compare");
  history.replaceState(null, "", url);
  compared = null;
  if (state) redraw();
  refreshCompared();
});
const logBox = document.getElementById("loss-log");
logBox.checked = localStorage.getItem(LOG_KEY) === "1";
charts.setLogLoss(logBox.checked);
logBox.addEventListener("change", () => {
  localStorage.setItem(LOG_KEY, logBox.checked ? "1" : "0");
  charts.setLogLoss(logBox.checked);
});

setInterval(() => { if (state) tick(state, serverNow()); }, 1000);
refresh();
connect(1000);
// For people and tests poking at the page from the console.
window.fedsite = { state: () => state, compared: () => compared, charts, isLive: () => live };
