// Chart.js charts, created once and updated in place from each snapshot. Chart.js draws on canvas,
// so node ids and metric names in legends and tooltips are text, never markup.
import { num } from "./format.js";

// Friendlier names for the metrics our own nodes and server report; any other name is shown as sent.
const METRIC_NAMES = {
  loss: "training loss",
  loss_before: "loss before local training",
  test_accuracy: "test accuracy (server's test set)",
  test_loss: "test loss (server's test set)",
  federated_accuracy: "federated accuracy (nodes' held-out data)",
  federated_loss: "federated loss (nodes' held-out data)",
  val_accuracy: "validation accuracy (nodes' own split)",
  val_loss: "validation loss (nodes' own split)",
};
const PALETTE = ["#2563eb", "#db2777", "#059669", "#d97706", "#7c3aed", "#0891b2", "#dc2626", "#65a30d",
  "#c026d3", "#0d9488", "#ea580c", "#4f46e5"];
// The metrics people compare keep fixed colours: test is the headline, so it gets the strongest one.
const METRIC_COLOURS = {
  test_accuracy: "#2563eb", test_loss: "#2563eb", federated_accuracy: "#059669", federated_loss: "#059669",
  val_accuracy: "#d97706", val_loss: "#d97706", loss: "#7c3aed", loss_before: "#94a3b8",
};

export const metricName = (k) => (Object.hasOwn(METRIC_NAMES, k) ? METRIC_NAMES[k] : k);

// A node keeps its colour across refreshes and across charts, whatever joins or leaves.
function colour(key) {
  if (Object.hasOwn(METRIC_COLOURS, key)) return METRIC_COLOURS[key];
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

// Points help while there are few rounds and only clutter a long run. A compared run is dashed.
function dataset(label, data, key, dashed) {
  const c = colour(key || label);
  return { label, data, borderColor: c, backgroundColor: c, pointRadius: data.length > 30 ? 0 : 3,
    pointHoverRadius: 5, borderWidth: 2, tension: 0.2, spanGaps: true, borderDash: dashed ? [6, 4] : [],
    pointStyle: dashed ? "rectRot" : "circle" };
}

// Both runs on one x axis: every round number either has, each series with null where it has none.
function roundAxis(runs) {
  const numbers = [...new Set(runs.flatMap((r) => r.charts.rounds))].sort((a, b) => a - b);
  const aligned = (run, values) => {
    const at = new Map(run.charts.rounds.map((n, i) => [n, values[i]]));
    return numbers.map((n) => (at.has(n) ? at.get(n) : null));
  };
  return { labels: numbers.map(String), aligned };
}

export class Charts {
  constructor() {
    this.available = typeof window.Chart === "function";
    this.charts = {};
    this.logLoss = false;
    if (!this.available) return;
    const line = (id, y) => new window.Chart(document.getElementById(id), {
      type: "line", data: { labels: [], datasets: [] }, options: lineOptions(y) });
    this.charts.accuracy = line("chart-accuracy", "accuracy");
    this.charts.accuracy.options.scales.y.min = 0;
    this.charts.accuracy.options.scales.y.max = 1;
    this.charts.loss = line("chart-loss", "loss");
    this.charts.other = line("chart-other", "value");
    this.charts.norms = line("chart-norms", "L2 norm");
    this.charts.nodeLoss = line("chart-node-loss", "loss");
    const hist = lineOptions("parameters");
    hist.plugins.legend.display = false;
    hist.scales.x = { title: { display: true, text: "value" }, grid: { display: false },
      ticks: { maxRotation: 0, autoSkip: true, maxTicksLimit: 8 } };
    this.charts.hist = new window.Chart(document.getElementById("chart-hist"), {
      type: "bar", data: { labels: [], datasets: [] }, options: hist });
  }

  // Losses span orders of magnitude once training converges: a log axis shows the late rounds apart.
  setLogLoss(on) {
    this.logLoss = on;
    if (!this.available) return;
    const y = this.charts.loss.options.scales.y;
    y.type = on ? "logarithmic" : "linear";
    y.title.text = on ? "loss (log scale)" : "loss";
    this.charts.loss.update("none");
  }

  // `s`: the experiment shown; `other`: the one compared with it (null for none), drawn dashed on the same axes.
  update(s, other) {
    if (!this.available) return;
    const runs = other ? [s, other] : [s];
    const axis = roundAxis(runs);
    for (const group of ["fraction", "loss", "other"]) {
      const datasets = runs.flatMap((run, i) => run.charts.groups[group].map((k) => dataset(
        (other ? run.experiment.name + " · " : "") + metricName(k),
        axis.aligned(run, run.charts.round_metrics[k]), k, i === 1)));
      const name = group === "fraction" ? "accuracy" : group;
      this.set(name, axis.labels, datasets);
      if (group === "fraction") document.getElementById("chart-accuracy-empty").hidden = datasets.length > 0;
      if (group === "other") document.getElementById("panel-other").hidden = datasets.length === 0;
    }
    const labels = s.charts.rounds.map(String);
    const nodes = Object.entries(s.charts.nodes);
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
