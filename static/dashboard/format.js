// Small pure helpers: number, size and time formatting, and a node's status from its last contact.

export function num(value, digits = 4) {
  if (value == null || !Number.isFinite(Number(value))) return "–";
  const x = Number(value);
  if (x !== 0 && (Math.abs(x) < 1e-3 || Math.abs(x) >= 1e5)) return x.toExponential(2);
  return Number(x.toPrecision(digits)).toString();
}

export function bytes(n) {
  if (n == null) return "–";
  const units = ["B", "KB", "MB", "GB"];
  let i = 0;
  let x = Number(n);
  while (x >= 1024 && i < units.length - 1) { x /= 1024; i += 1; }
  return (i === 0 ? x.toString() : x.toFixed(1)) + " " + units[i];
}

export function age(seconds) {
  if (seconds == null) return "never";
  const s = Math.max(0, Math.round(seconds));
  if (s < 60) return s + " s ago";
  if (s < 3600) return Math.floor(s / 60) + " min ago";
  if (s < 86400) return Math.floor(s / 3600) + " h ago";
  return Math.floor(s / 86400) + " d ago";
}

export function countdown(seconds) {
  const s = Math.max(0, Math.round(seconds));
  const h = Math.floor(s / 3600);
  const m = Math.floor((s % 3600) / 60);
  const rest = String(s % 60).padStart(2, "0");
  return h ? h + ":" + String(m).padStart(2, "0") + ":" + rest : m + ":" + rest;
}

export function clock(iso) {
  return iso ? new Date(iso).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit", second: "2-digit" }) : "";
}

// The same rule as Node.status on the server, so a node turns stale on screen without a reload:
// done (it left cleanly after its run ended, which no clock undoes) is the server's word; then an etcd
// lease decides when there is one (discovery_alive true or false), else the last contact.
export function nodeStatus(node, nowMs, thresholds) {
  if (node.status === "done") return "done";
  if (node.discovery_alive === false) return "offline";
  if (node.discovery_alive === true) return "online";
  if (!node.last_seen) return "offline";
  const ageS = (nowMs - Date.parse(node.last_seen)) / 1000;
  if (ageS <= thresholds.stale_s) return "online";
  if (ageS <= thresholds.offline_s) return "stale";
  return "offline";
}
