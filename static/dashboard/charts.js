// Chart.js charts, created once and updated in place from each snapshot. Chart.js draws on canvas,
// so node ids in legends and tooltips are text, never markup.
import { num } from "./format.js";

// Friendlier names for the metrics our own nodes report; any other name is shown as sent.
const METRIC_NAMES = {
  loss_before: "loss before local training",
  test_accuracy: "test accuracy (server's test set)",
  test_loss: "test loss (server's test set)",
  federated_accuracy: "federated accuracy (nodes' held-out data)",
  federated_loss: "federated loss (nodes' held-out data)",
};
const PALETTE = ["#2563eb", "#db2777", "#059669", "#d97706", "#7c3aed", "#0891b2", "#dc2626", "#65a30d",
  "#c026d3", "#0d9488", "#ea580c", "#4f46e5"];

// A node keeps its colour across refreshes and across charts, whatever joins or leaves.
function colour(key) {
  let h = 0;
  for (const ch of key) h = (h * 31 + ch.codePointAt(0)) >>> 0;
  return PALETTE[h % PALETTE.length];
}

function lineOptions(yTitle) {
  return {
    responsive: true,
    maintainAspectRatio: false,
    animation: false,
    interaction: { mode: "nearest", intersect: false },
    plugins: {
      legend: { display: true, position: "bottom", labels: { boxWidth: 10, boxHeight: 10, usePointStyle: true } },
      tooltip: { callbacks: { label: (c) => c.dataset.label + ": " + num(c.parsed.y, 5) } },
    },
    scales: {
      x: { title: { display: true, text: "round" }, grid: { display: false } },
      y: { title: { display: true, text: yTitle }, ticks: { callback: (v) => num(v, 3) } },
    },
  };
}

// Points help while there are few rounds and only clutter a long run.
function dataset(label, data, key) {
  const c = colour(key || label);
  return { label, data, borderColor: c, backgroundColor: c, pointRadius: data.length > 30 ? 0 : 3,
    pointHoverRadius: 5, borderWidth: 2, tension: 0.2, spanGaps: true };
}

export class Charts {
  constructor() {
    this.available = typeof window.Chart === "function";
    this.charts = {};
    if (!this.available) return;
    const line = (id, y) => new window.Chart(document.getElementById(id), {
      type: "line", data: { labels: [], datasets: [] }, options: lineOptions(y) });
    this.charts.loss = line("chart-loss", "loss");
    this.charts.eval = line("chart-eval", "value");
    this.charts.norms = line("chart-norms", "L2 norm");
    this.charts.nodeLoss = line("chart-node-loss", "loss");
    const hist = lineOptions("parameters");
    hist.plugins.legend.display = false;
    hist.scales.x = { title: { display: true, text: "value" }, grid: { display: false },
      ticks: { maxRotation: 0, autoSkip: true, maxTicksLimit: 8 } };
    this.charts.hist = new window.Chart(document.getElementById("chart-hist"), {
      type: "bar", data: { labels: [], datasets: [] }, options: hist });
  }

  update(s) {
    if (!this.available) return;
    const c = s.charts;
    const labels = c.rounds.map(String);
    const metrics = Object.entries(c.round_metrics);
    this.set("loss", labels, metrics.filter(([k]) => k === "loss").map(([k, v]) => dataset("training loss", v, k)));
    const evals = metrics.filter(([k]) => k !== "loss");
    const name = (k) => (Object.hasOwn(METRIC_NAMES, k) ? METRIC_NAMES[k] : k);
    this.set("eval", labels, evals.map(([k, v]) => dataset(name(k), v, k)));
    document.getElementById("chart-eval-empty").hidden = evals.length > 0;
    const nodes = Object.entries(c.nodes);
    this.set("norms", labels, nodes.map(([id, v]) => dataset(id, v.delta_norm)));
    this.set("nodeLoss", labels, nodes.map(([id, v]) => dataset(id, v.loss)));
    if (!s.model) return; // waiting for the first node's initial model
    const h = s.model.summary.histogram;
    const centres = h.counts.map((_, i) => num((h.edges[i] + h.edges[i + 1]) / 2, 2));
    this.set("hist", centres, [{ label: "parameters", data: h.counts, backgroundColor: "#2563eb99",
      borderColor: "#2563eb", borderWidth: 1, barPercentage: 1, categoryPercentage: 1 }]);
  }

  set(name, labels, datasets) {
    const chart = this.charts[name];
    chart.data.labels = labels;
    chart.data.datasets = datasets;
    chart.update("none");
  }
}
