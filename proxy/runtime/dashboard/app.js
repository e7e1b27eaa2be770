// wsgate dashboard: polls /status (JSON) and /metrics (Prometheus text) on
// the admin listener it was served from, keeps a few minutes of history in
// memory and draws it on canvases by hand. No library, no other origin.
"use strict";

const POLL_MS = 1000;
const HISTORY = 300;  // points kept per series (5 minutes at one a second)
const PALETTE = ["#2563eb", "#dc2626", "#16a34a", "#d97706", "#7c3aed", "#0891b2", "#db2777", "#4b5563",
                 "#65a30d", "#9333ea"];

const $ = (id) => document.getElementById(id);

// ---- Prometheus text (version 0.0.4) -----------------------------------------

// [{name, labels: {k: v}, value}] of every sample line.
function parse_prometheus(text) {
  const samples = [];
  for (const line of text.split("\n")) {
    if (!line || line.startsWith("#")) continue;
    const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})?\s+(\S+)/.exec(line);
    if (!m) continue;
    const labels = {};
    if (m[3]) {
      const re = /([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"/g;
      let l;
      while ((l = re.exec(m[3])) !== null) labels[l[1]] = l[2].replace(/\\(.)/g, (_, c) => (c === "n" ? "\n" : c));
    }
    samples.push({ name: m[1], labels, value: Number(m[4]) });
  }
  return samples;
}

function sum(samples, name, match = () => true) {
  let total = 0;
  for (const s of samples) if (s.name === name && match(s.labels)) total += s.value;
  return total;
}

// ---- State -------------------------------------------------------------------

const history = { times: [], series: new Map() };  // series: key -> array parallel to times
let previous = null;   // {time, counters} of the last poll, for rates
let reloads_seen = null;

function push(key, value) {
  if (!history.series.has(key)) history.series.set(key, new Array(history.times.length - 1).fill(null));
  history.series.get(key).push(value);
}

function record(now, status, samples) {
  const counters = {
    handshakes: sum(samples, "wsgate_handshake_duration_seconds_count"),
    c2b: sum(samples, "wsgate_messages_total", (l) => l.direction === "client_to_backend"),
    b2c: sum(samples, "wsgate_messages_total", (l) => l.direction === "backend_to_client"),
    heartbeat: sum(samples, "wsgate_heartbeat_timeouts_total"),
    reloads: sum(samples, "wsgate_reloads_total"),
    closes: {},
  };
  for (const s of samples) {
    if (s.name === "wsgate_closes_total") counters.closes[s.labels.code] = (counters.closes[s.labels.code] || 0) + s.value;
  }
  history.times.push(now);
  const rate = (key) => {
    if (!previous) return 0;
    const dt = (now - previous.time) / 1000;
    return dt > 0 ? Math.max(0, (counters[key] - previous.counters[key]) / dt) : 0;
  };
  push("connections", status.connections);
  for (const pool of status.pools) {
    for (const b of pool.backends) push(`sessions ${pool.name}/${b.id}`, b.active_sessions);
  }
  push("handshakes/s", rate("handshakes"));
  push("client→back end", rate("c2b"));
  push("back end→client", rate("b2c"));
  push("heartbeat failures/s", rate("heartbeat"));
  push("reloads", previous ? Math.max(0, counters.reloads - previous.counters.reloads) : 0);
  const codes = new Set([...Object.keys(counters.closes), ...(previous ? Object.keys(previous.counters.closes) : [])]);
  for (const code of codes) {
    const dt = previous ? (now - previous.time) / 1000 : 0;
    const before = previous ? previous.counters.closes[code] || 0 : counters.closes[code] || 0;
    push(`close ${code}`, dt > 0 ? Math.max(0, ((counters.closes[code] || 0) - before) / dt) : 0);
  }
  // Every series gets a point at every time (null where it had none yet).
  for (const values of history.series.values()) {
    while (values.length < history.times.length) values.push(null);
  }
  if (history.times.length > HISTORY) {
    history.times.shift();
    for (const values of history.series.values()) values.shift();
  }
  const tiles = {
    "t-connections": String(status.connections),
    "t-handshakes": rate("handshakes").toFixed(1),
    "t-msg-c2b": rate("c2b").toFixed(1),
    "t-msg-b2c": rate("b2c").toFixed(1),
    "t-heartbeat": String(counters.heartbeat),
    "t-reloads": `${status.reloads.success} / ${status.reloads.failure}`,
    "t-generation": String(status.generation),
  };
  for (const [id, text] of Object.entries(tiles)) $(id).textContent = text;
  reloads_seen = counters.reloads;
  previous = { time: now, counters };
}

// ---- Back-end table ------------------------------------------------------------

function render_backends(status) {
  const body = $("backends").tBodies[0];
  const rows = [];
  for (const pool of status.pools) {
    for (const b of pool.backends) {
      const tr = document.createElement("tr");
      tr.className = "backend";
      tr.dataset.pool = pool.name;
      tr.dataset.id = b.id;
      const cell = (text, cls) => {
        const td = document.createElement("td");
        if (cls) td.className = cls;
        td.textContent = text;
        tr.appendChild(td);
        return td;
      };
      cell(pool.name, "pool");
      cell(b.id, "id");
      cell(b.address, "address");
      const state = cell("", "state-cell");
      const badge = document.createElement("span");
      badge.className = `state ${b.state}`;
      badge.textContent = b.state;
      state.appendChild(badge);
      cell(String(b.active_sessions), "num sessions");
      const action = cell("", "");
      const button = document.createElement("button");
      const draining = b.state === "draining" || b.state === "drained";
      button.textContent = draining ? "enable" : "drain";
      button.className = draining ? "enable" : "drain";
      button.addEventListener("click", () => control(pool.name, b.id, draining ? "enable" : "drain"));
      action.appendChild(button);
      rows.push(tr);
    }
  }
  body.replaceChildren(...rows);
}

async function control(pool, id, verb) {
  const note = $("action");
  const headers = {};
  const token = $("token").value.trim();
  if (token) headers.Authorization = `Bearer ${token}`;
  try {
    const response = await fetch(`/pools/${encodeURIComponent(pool)}/backends/${encodeURIComponent(id)}/${verb}`,
                                 { method: "POST", headers, cache: "no-store" });
    const doc = await response.json();
    note.className = response.ok ? "action" : "action error";
    note.textContent = response.ok ? `${verb}: ${pool}/${id} is now ${doc.state}`
                                   : `${verb} ${pool}/${id}: ${response.status} ${doc.error || ""}`;
  } catch (error) {
    note.className = "action error";
    note.textContent = `${verb} ${pool}/${id}: ${error.message}`;
  }
  poll();
}

// ---- Charts ----------------------------------------------------------------------

function nice_max(value) {
  if (value <= 0) return 1;
  const magnitude = Math.pow(10, Math.floor(Math.log10(value)));
  for (const step of [1, 2, 5, 10]) if (value <= step * magnitude) return step * magnitude;
  return 10 * magnitude;
}

// Draws <keys>' series (lines; <bars> for per-interval counts) on canvas <id>
// and their names with colours in legend <legend_id>. With <dashed>, lines
// after the first are dashed, so that equal series (an echo's messages each
// way) stay visible.
function draw(id, legend_id, keys, bars = [], dashed = false) {
  const canvas = $(id);
  const ratio = window.devicePixelRatio || 1;
  const width = canvas.clientWidth || canvas.width;
  const height = canvas.clientHeight || canvas.height;
  if (canvas.width !== Math.round(width * ratio)) canvas.width = Math.round(width * ratio);
  if (canvas.height !== Math.round(height * ratio)) canvas.height = Math.round(height * ratio);
  const g = canvas.getContext("2d");
  g.setTransform(ratio, 0, 0, ratio, 0, 0);
  g.clearRect(0, 0, width, height);
  const left = 44, right = 8, top = 8, bottom = 18;
  const plot_w = width - left - right, plot_h = height - top - bottom;
  const n = history.times.length;
  let max = 0;
  for (const key of [...keys, ...bars]) {
    for (const v of history.series.get(key) || []) if (v !== null && v > max) max = v;
  }
  max = nice_max(max);
  g.font = "10px system-ui, sans-serif";
  g.fillStyle = "#6b7280";
  g.strokeStyle = "#e5e5e0";
  g.lineWidth = 1;
  for (let i = 0; i <= 4; i++) {
    const y = top + plot_h - (plot_h * i) / 4;
    g.beginPath();
    g.moveTo(left, y);
    g.lineTo(left + plot_w, y);
    g.stroke();
    const label = (max * i) / 4;
    g.fillText(label >= 100 ? label.toFixed(0) : String(Math.round(label * 100) / 100), 4, y + 3);
  }
  if (n > 1) {
    const span = Math.round((history.times[n - 1] - history.times[0]) / 1000);
    g.fillText(`last ${span} s`, left, height - 4);
  }
  // The newest point at the right edge, older ones to its left; the axis
  // spans at least a minute so that the first points do not fill it.
  const span_points = Math.max(n, 60);
  const x_of = (i) => left + (plot_w * (span_points - n + i)) / (span_points - 1);
  const y_of = (v) => top + plot_h - (plot_h * v) / max;
  const legend = [];
  let colour = 0;
  for (const key of bars) {
    const values = history.series.get(key) || [];
    const c = PALETTE[colour++ % PALETTE.length];
    g.fillStyle = c;
    values.forEach((v, i) => {
      if (v) g.fillRect(x_of(i) - 1.5, y_of(v), 3, top + plot_h - y_of(v));
    });
    legend.push([key, c]);
  }
  for (const key of keys) {
    const values = history.series.get(key) || [];
    const c = PALETTE[colour++ % PALETTE.length];
    g.strokeStyle = c;
    g.lineWidth = 1.5;
    g.setLineDash(dashed && key !== keys[0] ? [5, 4] : []);
    g.beginPath();
    let started = false;
    values.forEach((v, i) => {
      if (v === null) {
        started = false;
        return;
      }
      if (started) g.lineTo(x_of(i), y_of(v));
      else g.moveTo(x_of(i), y_of(v));
      started = true;
    });
    g.stroke();
    const last = values.length ? values[values.length - 1] : null;
    legend.push([last === null ? key : `${key}: ${Number.isInteger(last) ? last : last.toFixed(1)}`, c]);
  }
  $(legend_id).replaceChildren(...legend.map(([text, c]) => {
    const span = document.createElement("span");
    const swatch = document.createElement("i");
    swatch.style.background = c;
    span.append(swatch, text);
    return span;
  }));
}

function draw_all() {
  const keys = [...history.series.keys()];
  draw("c-sessions", "l-sessions", ["connections", ...keys.filter((k) => k.startsWith("sessions "))]);
  draw("c-handshakes", "l-handshakes", ["handshakes/s"]);
  draw("c-messages", "l-messages", ["client→back end", "back end→client"], [], true);
  draw("c-closes", "l-closes", keys.filter((k) => k.startsWith("close ")).sort());
  draw("c-heartbeat", "l-heartbeat", ["heartbeat failures/s"], ["reloads"]);
}

// ---- Polling -----------------------------------------------------------------------

let polling = false;
async function poll() {
  if (polling) return;
  polling = true;
  try {
    const [status_response, metrics_response] = await Promise.all([
      fetch("/status", { cache: "no-store" }), fetch("/metrics", { cache: "no-store" })]);
    if (!status_response.ok || !metrics_response.ok) {
      throw new Error(`/status ${status_response.status}, /metrics ${metrics_response.status}`);
    }
    const status = await status_response.json();
    const samples = parse_prometheus(await metrics_response.text());
    record(Date.now(), status, samples);
    render_backends(status);
    draw_all();
    $("live").className = "live ok";
    $("live").textContent = `live, updated ${new Date().toLocaleTimeString()}`;
  } catch (error) {
    $("live").className = "live error";
    $("live").textContent = `no answer from wsgate: ${error.message}`;
  } finally {
    polling = false;
  }
}

$("token").value = sessionStorage.getItem("wsgate-admin-token") || "";
$("token").addEventListener("change", () => sessionStorage.setItem("wsgate-admin-token", $("token").value));
poll();
setInterval(poll, POLL_MS);
