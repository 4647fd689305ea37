// inferscope dashboard: plain JS over the query API of the node that serves it.
//
// Every value that comes from the API (instance, model and rule names, messages...) is inserted
// with textContent or as a text node, never as HTML: names are outside input.
"use strict";

(function () {
  const STEP_FOR_WINDOW = { "1m": "10s", "5m": "10s", "15m": "30s", "1h": "1m" };
  const REFRESH_MS = 5000;
  const MAX_CHART_INSTANCES = 16;
  const COLORS = ["#2f6fde", "#e67e22", "#27ae60", "#c0392b", "#8e44ad", "#16a085", "#d4ac0d",
                  "#7f8c8d", "#2c3e50", "#e84393", "#00a8ff", "#6ab04c", "#b33939", "#474787",
                  "#cd6133", "#218c74"];

  const state = { token: localStorage.getItem("inferscope.token") || "", timer: null,
                  charts: {}, generation: 0 };

  // ---- helpers -------------------------------------------------------------------------------

  const $ = (id) => document.getElementById(id);

  async function api(path) {
    const headers = state.token ? { Authorization: "Bearer " + state.token } : {};
    const res = await fetch(path, { headers, cache: "no-store" });
    let body = null;
    try { body = await res.json(); } catch (e) { body = null; }
    if (!res.ok) {
      const msg = body && body.error ? body.error.message : "HTTP " + res.status;
      const err = new Error(msg);
      err.status = res.status;
      throw err;
    }
    return body;
  }

  // A cell: a string/number (text), null (–), or {text, cls, title, href}.
  function cell(v, numeric) {
    const td = document.createElement("td");
    if (v === null || v === undefined || v === "") {
      td.textContent = "–";
    } else if (typeof v === "object") {
      if (v.href) {
        const a = document.createElement("a");
        a.href = v.href;
        a.className = "instance";
        a.textContent = String(v.text);
        td.appendChild(a);
      } else {
        td.textContent = String(v.text);
      }
      if (v.cls) td.className = v.cls;
      if (v.title) td.title = String(v.title);
    } else {
      td.textContent = String(v);
      if (!numeric && !/^[-+]?[\d.]+( %)?$/.test(String(v))) td.className = "text";
    }
    return td;
  }

  function fillTable(id, rows, emptyText) {
    const tbody = $(id).querySelector("tbody");
    const fresh = document.createElement("tbody");
    if (rows.length === 0) {
      const tr = document.createElement("tr");
      const td = document.createElement("td");
      td.colSpan = $(id).querySelectorAll("thead th").length;
      td.className = "empty";
      td.textContent = emptyText;
      tr.appendChild(td);
      fresh.appendChild(tr);
    }
    for (const r of rows) {
      const tr = document.createElement("tr");
      for (const c of r) tr.appendChild(typeof c === "number" ? cell(fmt(c), true) : cell(c));
      fresh.appendChild(tr);
    }
    tbody.replaceWith(fresh);
  }

  function fmt(x, digits) {
    if (x === null || x === undefined || !isFinite(x)) return null;
    const a = Math.abs(x);
    if (digits !== undefined) return x.toFixed(digits);
    return a >= 100 ? x.toFixed(0) : a >= 10 ? x.toFixed(1) : a >= 1 ? x.toFixed(2) : x.toFixed(3);
  }
  // Axis labels: 1234 → "1.2k", 50000 → "50k".
  function compact(v) {
    if (v === null || v === undefined) return "";
    const a = Math.abs(v);
    if (a >= 1e6) return +(v / 1e6).toFixed(1) + "M";
    if (a >= 1e3) return +(v / 1e3).toFixed(1) + "k";
    return String(+v.toFixed(a >= 10 ? 0 : a >= 1 ? 1 : 3));
  }
  const pct = (x) => (x === null || x === undefined ? null : (100 * x).toFixed(2) + " %");
  const time = (ms) => (ms ? new Date(ms).toISOString().replace("T", " ").slice(0, 19) : null);
  const q = (o, k) => (o && o[k] !== undefined ? o[k] : null);
  const instanceLink = (name) => ({ text: name, href: "#/instance/" + encodeURIComponent(name) });

  function setStatus(text, error) {
    const s = $("status");
    s.textContent = text;
    s.className = error ? "status error" : "status";
  }

  // Every page of a paginated list endpoint (bounded: at most `maxPages`).
  async function allPages(path, key, maxPages) {
    const items = [];
    let cursor = null;
    for (let page = 0; page < (maxPages || 10); page++) {
      const sep = path.includes("?") ? "&" : "?";
      const body = await api(path + sep + "limit=1000" +
                             (cursor ? "&cursor=" + encodeURIComponent(cursor) : ""));
      items.push(...(body[key] || []));
      cursor = body.next_cursor;
      if (!cursor) break;
    }
    return items;
  }

  // ---- charts --------------------------------------------------------------------------------

  // A uPlot line chart in `id` of x (epoch s) and named series; replaced on each refresh.
  function drawChart(id, xs, series, opts) {
    const el = $(id);
    if (state.charts[id]) { state.charts[id].destroy(); delete state.charts[id]; }
    el.textContent = "";
    if (xs.length === 0 || series.length === 0) {
      const p = document.createElement("div");
      p.className = "nodata";
      p.textContent = "no data in this range";
      el.appendChild(p);
      return;
    }
    const width = Math.max(300, el.clientWidth - 14);
    const uopts = {
      width, height: (opts && opts.height) || 220,
      series: [{}].concat(series.map((s, i) => ({
        label: s.label, stroke: COLORS[i % COLORS.length], width: 1.5, spanGaps: false,
        scale: s.scale || "y",
      }))),
      axes: [{}, { scale: "y", size: 64, values: (u, splits) => splits.map(compact) }].concat(
        series.some((s) => s.scale === "r")
          ? [{ scale: "r", side: 1, size: 56, grid: { show: false },
               values: (u, splits) => splits.map((v) => compact(v) + " %") }] : []),
      scales: { x: { time: true }, y: { range: (u, min, max) => [0, max > 0 ? max * 1.05 : 1] },
                r: { range: (u, min, max) => [0, Math.max(1, max)] } },
      legend: { live: true },
    };
    state.charts[id] = new uPlot(uopts, [xs].concat(series.map((s) => s.data)), el);
    el.dataset.series = String(series.length);
  }

  const STEP_MS = { "10s": 10000, "30s": 30000, "1m": 60000 };

  // `/v1/series` over the default 60 steps before the watermark, or from `fromMs` when given.
  function seriesPath(instance, metric, windowText, fromMs) {
    return "/v1/series?instance=" + encodeURIComponent(instance) + "&metric=" + metric +
           "&step=" + (STEP_FOR_WINDOW[windowText] || "10s") + (fromMs ? "&from=" + fromMs : "");
  }

  // ---- views ---------------------------------------------------------------------------------

  async function renderFleet(windowText, gen) {
    const [instances, perf] = await Promise.all([
      allPages("/v1/instances", "instances"),
      api("/v1/performance/metrics?window=" + windowText).catch(() => null),
    ]);
    // One profile per model: every instance of it with its latency quantiles and rates.
    const models = new Set();
    for (const inst of instances) for (const m of inst.models || []) models.add(m.name);
    const profiles = await Promise.all([...models].sort().map((m) =>
      api("/v1/performance/profile/" + encodeURIComponent(m) + "?window=" + windowText)
        .catch(() => null)));
    if (gen !== state.generation) return;
    const rows = [];
    let from = null, to = null;
    for (const p of profiles) {
      if (!p) continue;
      from = p.from; to = p.to;
      for (const i of p.instances || []) {
        if (!i.e2e_ms && !i.ttft_ms) continue;  // a gauge-only series
        rows.push([instanceLink(i.instance), p.model, i.requests_per_s, i.tokens_per_s,
                   q(i.ttft_ms, "p50"), q(i.ttft_ms, "p95"), q(i.ttft_ms, "p99"),
                   q(i.tpot_ms, "p50"), q(i.tpot_ms, "p95"), q(i.tpot_ms, "p99"),
                   pct(i.error_ratio),
                   i.primary_bottleneck ? { text: i.primary_bottleneck, cls: "sev-HIGH" } : null]);
      }
    }
    rows.sort((a, b) => (a[0].text + "\u0000" + a[1]).localeCompare(b[0].text + "\u0000" + b[1]));
    fillTable("fleet-table", rows, "no instance has reported requests yet");
    $("fleet-range").textContent = from !== null ? "(" + time(from) + " – " + time(to) + " UTC)" : "";

    const cards = $("fleet-cards");
    cards.textContent = "";
    const card = (k, v) => {
      const d = document.createElement("div");
      d.className = "card";
      const vv = document.createElement("div"); vv.className = "v"; vv.textContent = v === null ? "–" : v;
      const kk = document.createElement("div"); kk.className = "k"; kk.textContent = k;
      d.append(vv, kk);
      cards.appendChild(d);
    };
    card("instances", String(instances.length));
    if (perf && perf.metrics) {
      const m = perf.metrics;
      card("requests/s", fmt(m.requests_per_second));
      card("p95 e2e ms", fmt(m.p95_response_time_ms));
      card("p99 e2e ms", fmt(m.p99_response_time_ms));
      card("error rate", pct(m.error_rate));
    }

    // ttft p95 over time, one line per instance.
    const names = instances.map((i) => i.id).slice(0, MAX_CHART_INSTANCES);
    // A fleet younger than the chart's 60 steps: start the chart where its data starts.
    const stepMs = STEP_MS[STEP_FOR_WINDOW[windowText]] || 10000;
    const firstSeen = Math.min(...instances.map((i) => i.first_seen || Infinity));
    const start = to !== null && firstSeen > to - 60 * stepMs && firstSeen < to - 2 * stepMs
      ? firstSeen : null;
    const reads = await Promise.all(names.map((n) =>
      api(seriesPath(n, "ttft_ms", windowText, start)).catch(() => null)));
    if (gen !== state.generation) return;
    let xs = [];
    const series = [];
    reads.forEach((r, k) => {
      if (!r || !r.points) return;
      if (xs.length === 0) xs = r.points.map((p) => p.start / 1000);
      series.push({ label: names[k], data: r.points.map((p) => (p.count > 0 ? p.p95 : null)) });
    });
    drawChart("fleet-chart", xs, series);

    const alerts = await api("/v1/alerts?state=firing&limit=100").catch(() => ({ alerts: [] }));
    if (gen !== state.generation) return;
    fillTable("fleet-alerts", (alerts.alerts || []).map((a) => [
      { text: a.severity, cls: "text sev-" + a.severity }, instanceLink(a.instance), a.model, a.rule,
      fmt(a.value), time(a.active_since), { text: a.message, cls: "msg" }]), "no firing alert");
  }

  async function renderInstance(name, windowText, gen) {
    $("instance-name").textContent = name;
    const metrics = ["ttft_ms", "tpot_ms", "e2e_ms"];
    const reads = await Promise.all(metrics.map((m) =>
      api(seriesPath(name, m, windowText)).catch((e) => ({ error: e.message }))));
    if (gen !== state.generation) return;
    reads.forEach((r, k) => {
      const id = "chart-" + metrics[k].split("_")[0];
      if (!r.points) { drawChart(id, [], []); return; }
      const xs = r.points.map((p) => p.start / 1000);
      const pick = (key) => r.points.map((p) => (p.count > 0 ? p[key] : null));
      drawChart(id, xs, [{ label: "p50", data: pick("p50") }, { label: "p95", data: pick("p95") },
                         { label: "p99", data: pick("p99") }]);
      if (k === 0) $("instance-models").textContent = "(models: " + (r.models || []).join(", ") + ")";
    });
    const e2e = reads[2];
    if (e2e.points) {
      const xs = e2e.points.map((p) => p.start / 1000);
      const stepS = (e2e.step_ms || 10000) / 1000;
      drawChart("chart-rate", xs, [
        { label: "requests/s", data: e2e.points.map((p) => p.events / stepS) },
        { label: "error %", scale: "r",
          data: e2e.points.map((p) => (p.events > 0 ? 100 * p.error_ratio : null)) },
      ]);
    } else {
      drawChart("chart-rate", [], []);
    }
    const b = await api("/v1/bottlenecks?instance=" + encodeURIComponent(name))
      .catch(() => ({ bottlenecks: [] }));
    if (gen !== state.generation) return;
    fillTable("instance-bottlenecks", (b.bottlenecks || []).map((x) => [
      { text: x.model, cls: "text" }, x.type, { text: x.severity, cls: "sev-" + x.severity },
      x.primary ? "yes" : "", fmt(x.value), { text: x.description, cls: "msg" }]),
      "no active bottleneck");
  }

  async function renderAlerts(gen) {
    const [alerts, silences] = await Promise.all([
      api("/v1/alerts?limit=200"), api("/v1/silences?limit=200").catch(() => ({ silences: [] }))]);
    if (gen !== state.generation) return;
    fillTable("alerts-table", (alerts.alerts || []).map((a) => [
      a.state, { text: a.severity, cls: "sev-" + a.severity }, instanceLink(a.instance), a.model,
      a.rule, a.metric + (a.stat ? ":" + a.stat : ""), fmt(a.value), time(a.detected_at),
      a.silenced ? "yes" : "", { text: a.message, cls: "msg" }]), "no alert stored");
    fillTable("silences-table", (silences.silences || []).map((s) => [
      s.id, s.status, JSON.stringify(s.matchers || {}), time(Date.parse(s.starts_at) || s.starts_at),
      time(Date.parse(s.ends_at) || s.ends_at), s.created_by, { text: s.comment, cls: "msg" }]),
      "no silence");
  }

  async function renderOperations(gen) {
    const [b, w, r] = await Promise.all([
      api("/v1/bottlenecks?limit=500").catch(() => ({ bottlenecks: [] })),
      api("/v1/workflows?limit=200").catch(() => ({ workflows: [] })),
      api("/v1/routing/weights").catch(() => ({ weights: [] }))]);
    if (gen !== state.generation) return;
    fillTable("bottlenecks-table", (b.bottlenecks || []).map((x) => [
      instanceLink(x.instance), x.model, x.type, { text: x.severity, cls: "sev-" + x.severity },
      x.primary ? "yes" : "", x.root_cause || null, { text: x.description, cls: "msg" }]),
      "no active bottleneck");
    fillTable("workflows-table", (w.workflows || []).map((x) => [
      x.id, instanceLink(x.instance), x.model, x.state, JSON.stringify(x.change || {}),
      x.verdict ? (x.verdict.result || JSON.stringify(x.verdict)) : null]), "no workflow");
    fillTable("routing-table", (r.weights || []).map((x) => [
      x.model, x.strategy,
      { text: Object.entries(x.weights || {}).map(([k, v]) => k + " " + (100 * v).toFixed(1) + " %")
          .join(", "), cls: "msg" },
      time(x.updated_at || x.event_time)]), "no routing weights stored");
  }

  // ---- routing and refresh -------------------------------------------------------------------

  function currentView() {
    const h = location.hash || "#/";
    if (h.startsWith("#/instance/")) return { view: "instance", name: decodeURIComponent(h.slice(11)) };
    if (h === "#/alerts") return { view: "alerts" };
    if (h === "#/operations") return { view: "operations" };
    return { view: "fleet" };
  }

  async function refresh() {
    const gen = ++state.generation;
    const v = currentView();
    for (const s of document.querySelectorAll("section.view")) s.hidden = s.id !== "view-" + v.view;
    for (const a of document.querySelectorAll("nav a")) {
      a.classList.toggle("active", a.id === "nav-" + (v.view === "instance" ? "fleet" : v.view));
    }
    const windowText = $("window").value;
    try {
      if (v.view === "fleet") await renderFleet(windowText, gen);
      else if (v.view === "instance") await renderInstance(v.name, windowText, gen);
      else if (v.view === "alerts") await renderAlerts(gen);
      else await renderOperations(gen);
      if (gen === state.generation) setStatus("updated " + new Date().toLocaleTimeString());
    } catch (e) {
      if (gen === state.generation) {
        setStatus(e.status === 401 ? "unauthorized: set a token" : "error: " + e.message, true);
      }
    }
    document.body.dataset.refreshed = String(gen);
  }

  function schedule() {
    if (state.timer) clearInterval(state.timer);
    state.timer = $("live").checked ? setInterval(refresh, REFRESH_MS) : null;
  }

  window.addEventListener("hashchange", refresh);
  $("window").addEventListener("change", refresh);
  $("live").addEventListener("change", schedule);
  $("token-button").addEventListener("click", () => {
    const t = prompt("Bearer token (empty: none)", state.token);
    if (t === null) return;
    state.token = t.trim();
    localStorage.setItem("inferscope.token", state.token);
    refresh();
  });
  refresh();
  schedule();
})();
