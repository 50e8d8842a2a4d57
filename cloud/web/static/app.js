// edgevib dashboard: plain JS, no build. Auth rides on the HttpOnly cookie set by /login.
"use strict";
const $ = (s) => document.querySelector(s);
const esc = (v) => String(v ?? "").replace(/[&<>"']/g, (c) => ({"&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;"}[c]));
const fmtTime = (ms) => (ms ? new Date(Number(ms)).toISOString().replace("T", " ").slice(0, 19) : "-");
const CLASSES = ["normal", "B007", "B014", "B021", "IR007", "IR014", "IR021", "OR007", "OR014", "OR021"];
// Label choices: the CWRU classes, plus the alert's own class when a model has others (a fault-type model's "OR").
const classOptions = (sel) => (CLASSES.includes(sel) || !sel ? CLASSES : [sel, ...CLASSES])
  .map((c) => `<option${c === sel ? " selected" : ""}>${esc(c)}</option>`).join("");
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
  if (b.dataset.tab === "trends") loadSensors();
  if (b.dataset.tab === "waterfall") loadSensors();
  if (b.dataset.tab === "plant") loadPlant().catch((e) => { $("#plant-note").textContent = e.message; });
}));
function showTab(name) { document.querySelector(`nav button[data-tab="${name}"]`).click(); }

// ---- alerts (live over server-sent events) ----
let source = null;
function alertRow(a, isNew) {
  const tr = document.createElement("tr");
  tr.id = "alert-" + a.id;
  tr.dataset.id = a.id;
  if (isNew) tr.className = "new";
  const p = typeof a.probability === "number" ? a.probability.toFixed(2) : "-";
  const opts = classOptions(a.label || a.cls);
  tr.innerHTML = `<td><a href="#" class="open-alert" title="alert detail">${fmtTime(a.ev_ms)}</a></td><td>${esc(a.asset)}</td><td>${esc(a.akind)}</td><td>${esc(a.state)}</td>
    <td class="cls">${esc(a.cls)}</td><td>${p}</td><td class="sev-${esc(a.severity)}">${esc(a.severity)}</td>
    <td>${esc(a.model_name)} ${esc(a.model_version)}</td>
    <td class="ack">${a.acked_by ? "✓ " + esc(a.acked_by) : '<button class="small do-ack">Ack</button>'}</td>
    <td class="label"><select>${opts}</select> <button class="small do-label">Label</button> <span>${esc(a.label || "")}</span></td>`;
  tr.querySelector(".open-alert").addEventListener("click", (e) => { e.preventDefault(); openAlert(a.id); });
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

// ---- charts: uPlot (cloud/web/static/vendor, MIT) ----
const charts = {};
const PALETTE = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2", "#17becf", "#7f7f7f", "#bcbd22"];
const ZONE_COLORS = {B: "#2e9d4a", C: "#e0a100", D: "#c62828"};

// A uPlot line chart in the div `el`: data = [xs, ys...]; opt.markers = [[name, x]] (dashed vertical, coloured by
// name), opt.hlines = [[name, y, color]] (horizontal), opt.vlines = [[name, x, color]], opt.time (x in s since epoch).
function lineChart(el, data, opt) {
  if (charts[el.id]) { charts[el.id].destroy(); delete charts[el.id]; }
  el.innerHTML = "";
  if (!data[0] || !data[0].length) { el.innerHTML = '<p class="note">no data</p>'; return null; }
  const names = opt.names || ["y"];
  const drawLines = (u) => {
    const ctx = u.ctx, {left, top, width, height} = u.bbox;
    ctx.save(); ctx.font = `${11 * devicePixelRatio}px sans-serif`; ctx.lineWidth = devicePixelRatio;
    ctx.textAlign = "left"; ctx.textBaseline = "alphabetic";
    ctx.beginPath(); ctx.rect(left, top, width, height); ctx.clip();
    const vline = (name, x, color, dash) => {
      if (x < u.scales.x.min || x > u.scales.x.max) return;
      const px = u.valToPos(x, "x", true);
      ctx.strokeStyle = ctx.fillStyle = color; ctx.setLineDash(dash);
      ctx.beginPath(); ctx.moveTo(px, top); ctx.lineTo(px, top + height); ctx.stroke();
      ctx.fillText(name, px + 3, top + 12 * devicePixelRatio);
    };
    (opt.markers || []).forEach(([name, x]) => vline(name, x, MARK_COLORS[name.split(" ")[0]] || "#000", [4, 3]));
    (opt.vlines || []).forEach(([name, x, color]) => vline(name, x, color, [2, 2]));
    (opt.hlines || []).forEach(([name, y, color]) => {
      const py = u.valToPos(y, "y", true);
      if (py < top || py > top + height) return;
      ctx.strokeStyle = ctx.fillStyle = color; ctx.setLineDash([6, 4]);
      ctx.beginPath(); ctx.moveTo(left, py); ctx.lineTo(left + width, py); ctx.stroke();
      ctx.fillText(name, left + 4, py - 3);
    });
    ctx.restore();
  };
  const yr = opt.yrange || ((u, mn, mx) => [opt.ymin ?? mn, Math.max(mx, ...(opt.hlines || []).map((h) => h[1] * 1.15)) || 1]);
  const u = new uPlot({
    width: Math.min(1100, el.clientWidth || 1100), height: opt.height || 200,
    scales: {x: {time: !!opt.time}, y: {range: yr}},
    axes: [{label: opt.xlabel || ""}, Object.assign({label: opt.ylabel || "", size: 60}, opt.yaxis || {})],
    legend: {show: names.length > 1 && !opt.nolegend},
    cursor: {drag: {x: true, y: false}},
    series: [{label: opt.xlabel || "x"}, ...names.map((n, i) => ({label: n, stroke: (opt.colors || PALETTE)[i], width: 1,
      points: {show: !!opt.points}, spanGaps: false}))],
    hooks: {draw: [drawLines]},
  }, data, el);
  charts[el.id] = u;
  return u;
}

function faultMarkers(mk) {
  const marks = [];
  for (const k of ["BPFO", "BPFI"]) for (const h of [1, 2, 3]) marks.push([h === 1 ? k : `${k} ${h}x`, mk[k] * h]);
  marks.push(["BSF", mk.BSF], ["BSF 2x", 2 * mk.BSF], ["FTF", mk.FTF], ["shaft", mk.shaft]);
  return marks;
}

// Waveform, spectrum and envelope spectrum (with fault-frequency markers) of one sensor_view into three divs.
function drawView(v, ids) {
  lineChart($(ids[0]), [v.waveform.t, v.waveform.x], {xlabel: "s", ylabel: "g", height: 180});
  lineChart($(ids[1]), [v.spectrum.f, v.spectrum.a], {xlabel: "Hz", ylabel: "spectrum", ymin: 0, height: 180});
  lineChart($(ids[2]), [v.envelope.f, v.envelope.a], {xlabel: "Hz", ylabel: "envelope", ymin: 0, height: 220,
    markers: faultMarkers(v.markers)});
}
function clearCharts(ids) { ids.forEach((c) => lineChart($(c), [[]], {})); }

async function loadSensors() {
  const body = await api("/api/sensors");
  for (const sel of [$("#sensor-pick"), $("#trend-pick"), $("#wf-pick")]) {
    const cur = sel.value;
    sel.innerHTML = body.sensors.map((s) => { const v = `${s.site}/${s.gateway}/${s.sensor}`;
      return `<option${v === cur ? " selected" : ""}>${esc(v)}</option>`; }).join("");
  }
}

async function showSensor() {
  const [site, gateway, sensor] = $("#sensor-pick").value.split("/");
  if (!sensor) return;
  const q = new URLSearchParams({site, gateway, sensor, geometry: $("#geometry").value});
  const d = await api("/api/sensor?" + q);
  const v = d.view;
  if (!v) {
    $("#sensor-note").textContent = "No evidence windows stored for this sensor (the agent uploads them when [evidence] is enabled); probabilities below come from its alerts.";
    clearCharts(["#c-wave", "#c-spec", "#c-env"]);
  } else {
    const mk = v.markers;
    $("#sensor-note").textContent = `Newest of ${d.n_windows} windows: ${fmtTime(v.t_ms)}, ${v.n} samples at ${v.fs} Hz, ${Math.round(v.rpm)} rpm` +
      (v.rpm_assumed ? " (assumed)" : "") + `, ${v.geometry}; model said ${v.pred_cls} (p=${(v.probability ?? 0).toFixed(2)}), ` +
      `envelope check says ${v.physics}; band ${v.envelope.band_hz[0]}-${v.envelope.band_hz[1]} Hz. ` +
      `BPFO ${mk.BPFO.toFixed(1)} Hz, BPFI ${mk.BPFI.toFixed(1)} Hz, BSF ${mk.BSF.toFixed(1)} Hz.`;
    drawView(v, ["#c-wave", "#c-spec", "#c-env"]);
  }
  // One uPlot series per class on the union of the alert/window times (null where a row lacks the class).
  const ts = [...new Set(d.probabilities.map((p) => p.t_ms))].sort((x, y) => x - y);
  const classes = [...new Set(d.probabilities.flatMap((p) => Object.keys(p.probs)))];
  const col = Object.fromEntries(ts.map((t, i) => [t, i]));
  const ys = classes.map(() => ts.map(() => null));
  d.probabilities.forEach((p) => Object.entries(p.probs).forEach(([c, val]) => { ys[classes.indexOf(c)][col[p.t_ms]] = val; }));
  lineChart($("#c-prob"), [ts.map((t) => t / 1000), ...ys], {names: classes, time: true, ylabel: "probability",
    yrange: [0, 1], points: true, height: 200});
}

$("#sensor-load").addEventListener("click", () => showSensor().catch((e) => { $("#sensor-note").textContent = e.message; }));

// ---- alert detail ----
let current = null;
const pct = (p) => (typeof p === "number" ? (100 * p).toFixed(0) + " %" : "-");
async function openAlert(id) {
  showTab("alert");
  const d = await api(`/api/alerts/${encodeURIComponent(id)}/detail?geometry=${encodeURIComponent($("#geometry").value)}`);
  current = d;
  const a = d.alert, v = d.verdict;
  $("#alert-none").hidden = true; $("#alert-body").hidden = false;
  $("#ad-title").textContent = `${a.asset} · ${a.akind} ${a.state} · ${fmtTime(a.ev_ms)} UTC · severity ${a.severity}`;
  $("#ad-verdict").textContent = `${v.fault_type}` + (v.confidence != null ? ` (${pct(v.confidence)})` : "");
  $("#ad-verdict").className = "big sev-" + a.severity;
  $("#ad-verdict-note").textContent = v.fused
    ? `fused verdict, carried by ${(v.carried_by || []).join(" + ") || "-"}` + (v.anomaly_ratio != null ? `; anomaly ratio ${Number(v.anomaly_ratio).toFixed(2)}` : "")
    : `no fused verdict (agent before it): the fault type of class ${a.cls}`;
  $("#ad-probs tbody").innerHTML = Object.entries(d.class_probabilities).sort((x, y) => y[1] - x[1])
    .map(([c, p]) => `<tr><td>${esc(c)}</td><td>${pct(p)}</td></tr>`).join("") || "<tr><td>-</td></tr>";
  const pe = d.physics_evidence;
  let ph = `physics says <b>${esc(v.physics ?? "-")}</b>; ` + (v.agree == null ? "agreement unknown" : v.agree ? "<b>agrees</b> with the model" : "<b>disagrees</b> with the model");
  if (pe) {
    ph += `<br>band ${esc((pe.band_hz || []).join("-"))} Hz` + (pe.band_kurtosis != null ? ` (kurtosis ${Number(pe.band_kurtosis).toFixed(2)})` : "");
    ph += "<br>scores: " + Object.entries(pe.scores_db || {}).map(([k, x]) => `${esc(k)} ${Number(x).toFixed(1)} dB`).join(", ");
    ph += "<br>peaks: " + Object.entries(pe.peaks || {}).map(([k, x]) => `${esc(k)} ${Number(x[0]).toFixed(1)} Hz/${Number(x[1]).toFixed(1)} dB`).join(", ");
  } else ph += "<br>(the alert carried no physics evidence)";
  $("#ad-physics").innerHTML = ph;
  $("#ad-label-cls").innerHTML = classOptions(d.label || a.cls);
  $("#ad-label-now").textContent = d.label ? "labelled " + d.label : "";
  $("#ad-ack").disabled = !!d.ack; $("#ad-ack").textContent = d.ack ? "✓ acked by " + d.ack.by : "Ack";
  if (d.view) {
    const w = d.view;
    $("#ad-ev-note").textContent = `${w.for_alert ? "The window uploaded for this alert" : "The sensor's nearest window"}: ${fmtTime(w.t_ms)}, ` +
      `${w.n} samples at ${w.fs} Hz, ${Math.round(w.rpm)} rpm${w.rpm_assumed ? " (assumed)" : ""}, ${w.geometry}; envelope check says ${w.physics}. ` +
      `BPFO ${w.markers.BPFO.toFixed(1)} Hz, BPFI ${w.markers.BPFI.toFixed(1)} Hz.`;
    drawView(w, ["#ad-wave", "#ad-spec", "#ad-env"]);
  } else {
    $("#ad-ev-note").textContent = "No evidence window at this alert (the agent uploads them when [evidence] is enabled).";
    clearCharts(["#ad-wave", "#ad-spec", "#ad-env"]);
  }
  const tr = d.trend.filter((r) => r.vel_rms_mm_s != null);
  $("#ad-trend-note").textContent = tr.length ? `${tr.length} indicator readings; the alert is the purple line.` : "No indicators stored for this sensor around the alert.";
  lineChart($("#ad-trend"), [tr.map((r) => r.t_ms / 1000), tr.map((r) => r.vel_rms_mm_s)],
    {time: true, ylabel: "mm/s", ymin: 0, points: true, vlines: [["alert", a.ev_ms / 1000, "#6a1b9a"]]});
  $("#ad-history tbody").innerHTML = d.history.map((h) => `<tr class="h-${esc(h.what)}"><td>${fmtTime(h.t_ms)}</td><td>${esc(h.what)}</td>
    <td>${esc(h.by)}</td><td class="wrap">${esc(h.text)}</td></tr>`).join("");
}
$("#ad-ack").addEventListener("click", async () => {
  try { await api(`/api/alerts/${encodeURIComponent(current.alert.id)}/ack`, {method: "POST", body: "{}"}); openAlert(current.alert.id); }
  catch (e) { alert("ack failed: " + e.message); }
});
$("#ad-label").addEventListener("click", async () => {
  try { await api(`/api/alerts/${encodeURIComponent(current.alert.id)}/label`, {method: "POST", body: JSON.stringify({cls: $("#ad-label-cls").value})});
        openAlert(current.alert.id); } catch (e) { alert("label failed: " + e.message); }
});
$("#ad-note-form").addEventListener("submit", async (e) => {
  e.preventDefault();
  try { await api(`/api/alerts/${encodeURIComponent(current.alert.id)}/note`, {method: "POST", body: JSON.stringify({note: $("#ad-note").value})});
        $("#ad-note").value = ""; $("#ad-note-msg").textContent = "stored"; openAlert(current.alert.id); }
  catch (err) { $("#ad-note-msg").textContent = "not stored: " + err.message; }
});

// ---- sensor trends ----
async function showTrends() {
  const [site, gateway, sensor] = $("#trend-pick").value.split("/");
  if (!sensor) return;
  const until = Date.now(), since = until - Number($("#trend-range").value) * 3600e3;
  const d = await api("/api/trends?" + new URLSearchParams({site, gateway, sensor, since_ms: since, until_ms: until}));
  const z = d.iso.zones, s = d.series.filter((r) => r.vel != null);
  const res = {raw: "raw indicators", 60: "1-min rollups (mean, min-max)", 3600: "1-h rollups (mean, min-max)"}[d.resolution];
  $("#trend-note").textContent = `${s.length} points, ${res}` + (d.requested !== d.resolution ? ` (no ${d.requested}-s rollups yet)` : "") +
    `; ISO 10816-3 group ${d.iso.group}, ${d.iso.foundation} foundation: zone B from ${z.B}, C from ${z.C}, D from ${z.D} mm/s; ` +
    `latest ${d.iso.latest_vel != null ? Number(d.iso.latest_vel).toFixed(2) + " mm/s, zone " + d.iso.latest_zone : "-"}; ${d.alerts.length} alerts.`;
  const t = s.map((r) => r.t_ms / 1000);
  const alerts = d.alerts.map((a) => [a.verdict || a.cls, a.t_ms / 1000, "#6a1b9a"]);
  const hl = Object.entries(z).map(([k, y]) => ["zone " + k, y, ZONE_COLORS[k]]);
  const lv = d.levels;
  if (lv && lv.mode !== "iso" && lv.warning != null) hl.push([`warning (${lv.mode})`, lv.warning, "#ef6c00"], [`alarm (${lv.mode})`, lv.alarm, "#b71c1c"]);
  const LEVEL_COLORS = {warning: "#ef6c00", alarm: "#b71c1c", normal: "#2e7d32"};
  (d.model_changes || []).forEach((m) => alerts.push([`model ${m.model_name || ""} ${m.model_version || ""}`, m.t_ms / 1000, "#1565c0"]));
  (d.level_events || []).filter((e) => e.kind !== "baseline").forEach((e) =>
    alerts.push([`${e.level}${e.kind === "cleared" ? " (cleared)" : ""}`, e.t_ms / 1000, LEVEL_COLORS[e.level] || "#555"]));
  $("#trend-note").textContent += ` ${(d.level_events || []).filter((e) => e.kind !== "baseline").length} level crossings` +
    (lv ? ` (${lv.mode} levels: warning ${Number(lv.warning).toFixed(2)}, alarm ${Number(lv.alarm).toFixed(2)} mm/s).` : ".");
  const velData = [t, s.map((r) => r.vel)], names = ["velocity RMS"];
  if (d.resolution !== "raw") { velData.push(s.map((r) => r.vel_min), s.map((r) => r.vel_max)); names.push("min", "max"); }
  lineChart($("#tr-vel"), velData, {time: true, ylabel: "mm/s", ymin: 0, height: 260, names, hlines: hl, vlines: alerts,
    colors: ["#1f77b4", "#9ecae1", "#9ecae1"], points: s.length < 200});
  lineChart($("#tr-acc"), [t, s.map((r) => r.acc_rms), s.map((r) => r.kurtosis)], {time: true, names: ["acc RMS (g)", "kurtosis"],
    height: 200, vlines: alerts, yrange: (u, mn, mx) => [0, mx || 1]});
}
$("#trend-load").addEventListener("click", () => showTrends().then(showHistory).catch((e) => { $("#trend-note").textContent = e.message; }));

// ---- per-asset history (alerts, acks, labels, notes, level crossings, model changes) ----
async function showHistory() {
  const [site, gateway, sensor] = $("#trend-pick").value.split("/");
  if (!sensor) return;
  const h = await api("/api/history?" + new URLSearchParams({site, gateway, sensor, limit: 200}));
  $("#asset-history tbody").innerHTML = h.items.map((x) => `<tr class="h-${esc(x.what.replace(/ /g, "-"))}"><td>${
    x.alert_id ? `<a href="#" class="open-alert" data-id="${esc(x.alert_id)}">${fmtTime(x.t_ms)}</a>` : fmtTime(x.t_ms)}</td>
    <td>${esc(x.what)}</td><td>${esc(x.by)}</td><td class="wrap">${esc(x.text)}</td></tr>`).join("") ||
    '<tr><td colspan="4">nothing yet</td></tr>';
  document.querySelectorAll("#asset-history a.open-alert").forEach((a) => a.addEventListener("click", (e) => {
    e.preventDefault(); openAlert(a.dataset.id); }));
}

// ---- plant overview: site -> gateway -> sensor tiles, coloured by worst state ----
async function loadPlant() {
  const p = await api("/api/plant");
  const byName = $("#plant-sort").value === "name";
  const order = (xs, key, name) => xs.slice().sort((a, b) => byName ? String(a[name]).localeCompare(String(b[name]))
    : (b[key] - a[key]) || String(a[name]).localeCompare(String(b[name])));
  $("#plant-note").textContent = Object.entries(p.counts).filter(([, n]) => n).map(([k, n]) => `${n} ${k}`).join(", ") ||
    "No sensors yet: tiles appear with the first indicators or alerts.";
  $("#plant").innerHTML = order(p.sites, "rank", "site").map((s) => `<div class="site"><h3>${esc(s.site)}</h3>${
    order(s.gateways, "rank", "gateway").map((g) => `<div class="gw"><h4>${esc(g.gateway)} <span class="${esc(g.status || "")}">${esc(g.status || "")}</span></h4>${
      order(g.sensors, "rank", "sensor").map((t) => `<div class="tile st-${esc(t.state)}" id="tile-${esc(t.asset.replace(/\//g, "-"))}"
        data-asset="${esc(t.asset)}" title="${esc(t.why)}"><b>${esc(t.sensor)}</b>${esc(t.state)}<br>${
        t.vel != null ? Number(t.vel).toFixed(2) + " mm/s, zone " + esc(t.zone) : "no indicators"}<br>${esc(t.why)}</div>`).join("")
    }</div>`).join("")}</div>`).join("");
  document.querySelectorAll("#plant .tile").forEach((el) => el.addEventListener("click", async () => {
    showTab("trends");
    await loadSensors();
    const pick = $("#trend-pick");
    if (![...pick.options].some((o) => o.value === el.dataset.asset)) pick.add(new Option(el.dataset.asset, el.dataset.asset));
    pick.value = el.dataset.asset;
    $("#trend-load").click();
  }));
}
$("#plant-sort").addEventListener("change", () => loadPlant().catch(() => {}));

// ---- waterfall: envelope spectra of the stored evidence windows, one uPlot series per window ----
async function showWaterfall() {
  const [site, gateway, sensor] = $("#wf-pick").value.split("/");
  if (!sensor) return;
  const w = await api("/api/waterfall?" + new URLSearchParams({site, gateway, sensor, rows: $("#wf-rows").value,
                                                              geometry: $("#wf-geometry").value}));
  if (!w.rows.length) {
    $("#wf-note").textContent = "No evidence windows stored for this sensor (the agent uploads them when [evidence] is enabled).";
    lineChart($("#wf-chart"), [[]], {});
    return;
  }
  const peak = Math.max(...w.rows.map((r) => Math.max(...r.a))) || 1, step = 0.35, n = w.rows.length;
  // each row scaled to the largest peak of all, lifted by its age: the newest on top
  const data = [w.f, ...w.rows.map((r, i) => r.a.map((a) => a / peak + i * step))];
  const colors = w.rows.map((_, i) => `hsl(${220 - 220 * i / Math.max(1, n - 1)}, 70%, 42%)`);
  const u = lineChart($("#wf-chart"), data, {xlabel: "Hz", ylabel: "window (oldest at the bottom)", height: 120 + 22 * n,
    names: w.rows.map((r) => fmtTime(r.t_ms)), colors, markers: faultMarkers(w.markers), nolegend: true,
    yrange: () => [0, (n - 1) * step + 1.05], yaxis: {size: 80,
      // one tick per row (every k-th when many), labelled with the window's time
      splits: () => w.rows.map((_, i) => i * step).filter((_, i) => i % Math.ceil(n / 16) === 0),
      values: (_, ticks) => ticks.map((v) => { const r = w.rows[Math.round(v / step)]; return r ? fmtTime(r.t_ms).slice(11, 19) : ""; })}});
  if (!u) return;
  const last = w.rows[n - 1];
  $("#wf-note").textContent = `${n} windows from ${fmtTime(w.rows[0].t_ms)} to ${fmtTime(last.t_ms)}; newest at ${Number(last.rpm).toFixed(0)} rpm, ` +
    `model said ${last.pred_cls || "-"}; BPFO ${w.markers.BPFO.toFixed(1)} Hz, BPFI ${w.markers.BPFI.toFixed(1)} Hz, BSF ${w.markers.BSF.toFixed(1)} Hz.`;
}
$("#wf-load").addEventListener("click", () => showWaterfall().catch((e) => { $("#wf-note").textContent = e.message; }));

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
