// edgevib dashboard: plain JS, no build. Auth rides on the HttpOnly cookie set by /login.
"use strict";
const $ = (s) => document.querySelector(s);
const esc = (v) => String(v ?? "").replace(/[&<>"']/g, (c) => ({"&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;"}[c]));
const fmtTime = (ms) => (ms ? new Date(Number(ms)).toISOString().replace("T", " ").slice(0, 19) : "-");
const CLASSES = ["normal", "B007", "B014", "B021", "IR007", "IR014", "IR021", "OR007", "OR014", "OR021"];
const MARK_COLORS = {BPFO: "#d62728", BPFI: "#2ca02c", BSF: "#9467bd", FTF: "#8c564b", shaft: "#7f7f7f"};

async function api(path, opts) {
  const r = await fetch(path, Object.assign({credentials: "same-origin", headers: {"Content-Type": "application/json"}}, opts || {}));
  const body = await r.json().catch(() => ({}));
  if (!r.ok) throw new Error(body.error || r.status + " " + r.statusText);
  return body;
}

// ---- tabs ----
document.querySelectorAll("nav button").forEach((b) => b.addEventListener("click", () => {
  document.querySelectorAll("nav button, .tab").forEach((e) => e.classList.remove("active"));
  b.classList.add("active");
  $("#tab-" + b.dataset.tab).classList.add("active");
  if (b.dataset.tab === "sensor") loadSensors();
}));

// ---- alerts (live over server-sent events) ----
let source = null;
function alertRow(a, isNew) {
  const tr = document.createElement("tr");
  tr.id = "alert-" + a.id;
  tr.dataset.id = a.id;
  if (isNew) tr.className = "new";
  const p = typeof a.probability === "number" ? a.probability.toFixed(2) : "-";
  const opts = CLASSES.map((c) => `<option${c === (a.label || a.cls) ? " selected" : ""}>${c}</option>`).join("");
  tr.innerHTML = `<td>${fmtTime(a.ev_ms)}</td><td>${esc(a.asset)}</td><td>${esc(a.akind)}</td><td>${esc(a.state)}</td>
    <td class="cls">${esc(a.cls)}</td><td>${p}</td><td class="sev-${esc(a.severity)}">${esc(a.severity)}</td>
    <td>${esc(a.model_name)} ${esc(a.model_version)}</td>
    <td class="ack">${a.acked_by ? "✓ " + esc(a.acked_by) : '<button class="small do-ack">Ack</button>'}</td>
    <td class="label"><select>${opts}</select> <button class="small do-label">Label</button> <span>${esc(a.label || "")}</span></td>`;
  tr.querySelector(".do-ack")?.addEventListener("click", async () => {
    try { const r = await api(`/api/alerts/${encodeURIComponent(a.id)}/ack`, {method: "POST", body: "{}"});
          tr.querySelector(".ack").textContent = "✓ " + r.acked_by; } catch (e) { alert("ack failed: " + e.message); }
  });
  tr.querySelector(".do-label").addEventListener("click", async () => {
    const cls = tr.querySelector("select").value;
    try { await api(`/api/alerts/${encodeURIComponent(a.id)}/label`, {method: "POST", body: JSON.stringify({cls})});
          tr.querySelector(".label span").textContent = cls; } catch (e) { alert("label failed: " + e.message); }
  });
  return tr;
}

function filterQuery() {
  const f = new FormData($("#alert-filter"));
  const q = new URLSearchParams();
  for (const [k, v] of f) if (v) q.set(k, v);
  return q;
}

async function loadAlerts() {
  const q = filterQuery();
  const body = await api("/api/alerts?" + q);
  const tb = $("#alerts tbody");
  tb.innerHTML = "";
  body.alerts.slice().reverse().forEach((a) => tb.appendChild(alertRow(a, false)));
  if (source) source.close();
  q.set("after_ms", body.cursor[0]);
  q.set("after_id", body.cursor[1]);
  source = new EventSource("/api/alerts/stream?" + q);
  source.onopen = () => { $("#live").textContent = "live"; $("#live").className = "pill on"; };
  source.onerror = () => { $("#live").textContent = "live: reconnecting"; $("#live").className = "pill off"; };
  source.addEventListener("alert", (ev) => {
    const a = JSON.parse(ev.data);
    const old = document.getElementById("alert-" + a.id);
    const row = alertRow(a, true);
    if (old) old.replaceWith(row); else tb.insertBefore(row, tb.firstChild);
  });
}
$("#alert-filter").addEventListener("submit", (e) => { e.preventDefault(); loadAlerts(); });

// ---- fleet ----
async function loadFleet() {
  const body = await api("/api/fleet");
  $("#fleet-note").textContent = body.live_source
    ? "windows/s, latency and RSS: the newest heartbeats on MQTT; the rest: the alert store."
    : "windows/s, latency and RSS need the broker: start the dashboard with --broker URL.";
  $("#fleet tbody").innerHTML = body.gateways.map((g) => {
    const l = g.live || {}, ms = g.model_status;
    const age = g.last_hb_ms ? ` (${Math.round((body.now_ms - g.last_hb_ms) / 1000)} s ago)` : "";
    return `<tr id="gw-${esc(g.site)}-${esc(g.gateway)}"><td>${esc(g.site)}/${esc(g.gateway)}</td>
      <td class="${esc(g.status)}">${esc(g.status)}</td><td>${fmtTime(g.last_hb_ms)}${age}</td>
      <td>${esc(g.outbox_pending)}</td><td>${esc(g.drops_total)}</td>
      <td class="model">${esc(g.model_name)} ${esc(g.model_version)}</td><td>${esc(l.windows_per_s ?? "-")}</td>
      <td>${l.latency_p99_ms != null ? Number(l.latency_p99_ms).toFixed(1) : "-"}</td>
      <td>${l.rss_mb != null ? Number(l.rss_mb).toFixed(0) : "-"}</td>
      <td>${ms ? esc(ms.version + " " + ms.result + (ms.reason ? " (" + ms.reason + ")" : "")) : "-"}</td></tr>`;
  }).join("");
}

// ---- sensor view: canvas plots ----
function plot(canvas, xs, ys, opt) {
  const ctx = canvas.getContext("2d"), W = canvas.width, H = canvas.height, P = 40;
  ctx.clearRect(0, 0, W, H);
  if (!xs || !xs.length) { ctx.fillText("no data", W / 2, H / 2); return; }
  const x0 = opt.xmin ?? Math.min(...xs), x1 = opt.xmax ?? Math.max(...xs);
  let y0 = opt.ymin ?? Math.min(...ys), y1 = opt.ymax ?? Math.max(...ys);
  if (y1 === y0) y1 = y0 + 1;
  const X = (x) => P + (x - x0) / (x1 - x0 || 1) * (W - P - 10), Y = (y) => H - 20 - (y - y0) / (y1 - y0) * (H - 30);
  ctx.strokeStyle = "#999"; ctx.strokeRect(P, 10, W - P - 10, H - 30);
  ctx.fillStyle = "#444"; ctx.font = "11px sans-serif";
  ctx.fillText(x0.toFixed(opt.xdec ?? 0), P, H - 6); ctx.fillText(x1.toFixed(opt.xdec ?? 0) + " " + (opt.xunit || ""), W - 80, H - 6);
  ctx.fillText(y1.toPrecision(3), 2, 18);
  (opt.markers || []).forEach(([name, f]) => {
    if (f < x0 || f > x1) return;
    ctx.strokeStyle = MARK_COLORS[name.split(" ")[0]] || "#000"; ctx.setLineDash([4, 3]);
    ctx.beginPath(); ctx.moveTo(X(f), 10); ctx.lineTo(X(f), H - 20); ctx.stroke(); ctx.setLineDash([]);
    ctx.fillStyle = ctx.strokeStyle; ctx.fillText(name, X(f) + 2, 22);
  });
  ctx.strokeStyle = opt.color || "#1f77b4"; ctx.beginPath();
  xs.forEach((x, i) => (i ? ctx.lineTo(X(x), Y(ys[i])) : ctx.moveTo(X(x), Y(ys[i]))));
  ctx.stroke();
}

async function loadSensors() {
  const body = await api("/api/sensors");
  const sel = $("#sensor-pick"), cur = sel.value;
  sel.innerHTML = body.sensors.map((s) => { const v = `${s.site}/${s.gateway}/${s.sensor}`;
    return `<option${v === cur ? " selected" : ""}>${esc(v)}</option>`; }).join("");
}

async function showSensor() {
  const [site, gateway, sensor] = $("#sensor-pick").value.split("/");
  if (!sensor) return;
  const q = new URLSearchParams({site, gateway, sensor, geometry: $("#geometry").value});
  const d = await api("/api/sensor?" + q);
  const v = d.view;
  if (!v) {
    $("#sensor-note").textContent = "No evidence windows stored for this sensor (the agent uploads them when [evidence] is enabled); probabilities below come from its alerts.";
    ["#c-wave", "#c-spec", "#c-env"].forEach((c) => plot($(c), [], [], {}));
  } else {
    const mk = v.markers;
    $("#sensor-note").textContent = `Newest of ${d.n_windows} windows: ${fmtTime(v.t_ms)}, ${v.n} samples at ${v.fs} Hz, ${v.rpm} rpm` +
      (v.rpm_assumed ? " (assumed)" : "") + `, ${v.geometry}; model said ${v.pred_cls} (p=${(v.probability ?? 0).toFixed(2)}), ` +
      `envelope check says ${v.physics}; band ${v.envelope.band_hz[0]}-${v.envelope.band_hz[1]} Hz. ` +
      `BPFO ${mk.BPFO.toFixed(1)} Hz, BPFI ${mk.BPFI.toFixed(1)} Hz, BSF ${mk.BSF.toFixed(1)} Hz.`;
    plot($("#c-wave"), v.waveform.t, v.waveform.x, {xunit: "s", xdec: 3});
    plot($("#c-spec"), v.spectrum.f, v.spectrum.a, {xunit: "Hz", ymin: 0});
    const marks = [];
    for (const k of ["BPFO", "BPFI"]) for (const h of [1, 2, 3]) marks.push([h === 1 ? k : `${k} ${h}x`, mk[k] * h]);
    marks.push(["BSF", mk.BSF], ["BSF 2x", 2 * mk.BSF], ["FTF", mk.FTF], ["shaft", mk.shaft]);
    plot($("#c-env"), v.envelope.f, v.envelope.a, {xunit: "Hz", ymin: 0, markers: marks});
  }
  const series = {};
  d.probabilities.forEach((p) => Object.entries(p.probs).forEach(([c, val]) => { (series[c] = series[c] || []).push([p.t_ms, val]); }));
  const cv = $("#c-prob"), palette = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2", "#17becf", "#7f7f7f", "#bcbd22"];
  const ts = d.probabilities.map((p) => p.t_ms);
  cv.getContext("2d").clearRect(0, 0, cv.width, cv.height);
  Object.entries(series).forEach(([c, pts], i) => {
    const ctx = cv.getContext("2d"); ctx.save();
    plotOver(cv, pts, Math.min(...ts), Math.max(...ts), palette[i % palette.length], i === 0);
    ctx.restore();
  });
  $("#prob-legend").innerHTML = Object.keys(series).map((c, i) => `<i style="border-color:${palette[i % palette.length]}">${esc(c)}</i>`).join("");
}

function plotOver(canvas, pts, t0, t1, color, frame) {
  const ctx = canvas.getContext("2d"), W = canvas.width, H = canvas.height, P = 40;
  const X = (t) => P + (t - t0) / ((t1 - t0) || 1) * (W - P - 10), Y = (p) => H - 20 - p * (H - 30);
  if (frame) { ctx.strokeStyle = "#999"; ctx.strokeRect(P, 10, W - P - 10, H - 30); ctx.fillStyle = "#444";
    ctx.fillText("1.0", 2, 18); ctx.fillText("0", 2, H - 20); ctx.fillText(fmtTime(t0), P, H - 6); ctx.fillText(fmtTime(t1), W - 130, H - 6); }
  ctx.strokeStyle = color; ctx.fillStyle = color; ctx.beginPath();
  pts.forEach(([t, p], i) => (i ? ctx.lineTo(X(t), Y(p)) : ctx.moveTo(X(t), Y(p))));
  ctx.stroke();
  pts.forEach(([t, p]) => ctx.fillRect(X(t) - 2, Y(p) - 2, 4, 4));
}
$("#sensor-load").addEventListener("click", () => showSensor().catch((e) => { $("#sensor-note").textContent = e.message; }));

// ---- models ----
const targets = () => $("#targets").value.split(",").map((s) => s.trim()).filter(Boolean);
async function loadModels() {
  const m = await api("/api/models");
  $("#models-note").textContent = (m.registry_note || "") + (m.can_push ? "" : " Push/rollback need a broker (--broker) and the registry.");
  $("#registry tbody").innerHTML = (m.registry || []).map((v) => `<tr data-name="${esc(v.name)}" data-version="${esc(v.version)}">
    <td>${esc(v.name)}</td><td>${esc(v.version)}</td><td><code>${esc(JSON.stringify(v.metrics ?? {}))}</code></td>
    <td>${fmtTime(v.created_ms)}</td><td><button class="small do-push"${m.can_push ? "" : " disabled"}>Push</button></td></tr>`).join("");
  document.querySelectorAll(".do-push").forEach((b) => b.addEventListener("click", async () => {
    const tr = b.closest("tr");
    try { await api("/api/models/push", {method: "POST", body: JSON.stringify({name: tr.dataset.name, version: tr.dataset.version,
            targets: targets(), canary_pct: Number($("#canary").value || 0)})}); loadModels(); }
    catch (e) { alert("push failed: " + e.message); }
  }));
  $("#jobs tbody").innerHTML = m.jobs.map((j) => `<tr class="job-${esc(j.status)}"><td>${fmtTime(j.started_ms)}</td><td>${esc(j.kind)}</td>
    <td>${esc((j.name || "") + " " + (j.version || "") + " -> " + (j.targets || []).join(", "))}</td><td>${esc(j.status)}</td>
    <td><code>${esc(j.error || JSON.stringify(j.result))}</code></td></tr>`).join("");
  $("#retrains tbody").innerHTML = (m.retrains || []).map((t) => `<tr><td>${esc(t.id)}<br>${fmtTime(t.ts_ms)}</td>
    <td>${esc(t.reason)}</td><td>${esc(t.n_windows)}</td><td>${esc(t.run ? t.run.status : "pending")}</td>
    <td>${esc(t.run && t.run.model_version ? t.run.model_version : "")}</td><td>${esc(t.run ? t.run.decision : "")}</td></tr>`).join("");
  $("#rollouts tbody").innerHTML = m.rollouts.map((r) => `<tr><td>${fmtTime(r.started_ms)}</td><td>${esc(r.name)} ${esc(r.version)}</td>
    <td>${esc(r.target)}</td><td>${esc(r.canary_pct)}</td><td>${esc(r.status)}</td><td>${esc(r.detail)}</td></tr>`).join("");
  $("#verdicts tbody").innerHTML = m.model_status.map((r) => `<tr><td>${fmtTime(r.ts_ms)}</td><td>${esc(r.site)}/${esc(r.gateway)}</td>
    <td>${esc(r.name)} ${esc(r.version)}</td><td>${esc(r.result)}</td><td>${esc(r.reason)}</td></tr>`).join("");
}
$("#rollback").addEventListener("click", async () => {
  try { await api("/api/models/rollback", {method: "POST", body: JSON.stringify({targets: targets()})}); loadModels(); }
  catch (e) { alert("rollback failed: " + e.message); }
});

loadAlerts().catch((e) => { $("#live").textContent = "error: " + e.message; });
loadFleet().catch(() => {});
loadModels().catch(() => {});
setInterval(() => loadFleet().catch(() => {}), 3000);
setInterval(() => { if ($("#tab-models").classList.contains("active")) loadModels().catch(() => {}); }, 3000);
