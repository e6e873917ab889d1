// Weir's dashboard: queues, a queue's jobs and settings, a job's attempts, cron entries and
// the cache, with the operator's actions. Everything a client sent (kinds, payloads, errors,
// tags, keys) reaches the page through textContent and attributes, never as HTML: the page
// builds its DOM with el() below and never assigns HTML to an element. The server's Content-Security-Policy
// allows scripts and styles from this origin only.
"use strict";

const TOKEN_KEY = "weir-token";
const SAMPLE_MS = 2000;
const KEEP = 180; // samples in the charts: six minutes
const STATES = ["waiting", "scheduled", "active", "failed", "completed", "dead", "cancelled"];

// ---- DOM -----------------------------------------------------------------------------------

function el(tag, attrs, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v == null || v === false) continue;
    if (k.startsWith("on")) e.addEventListener(k.slice(2), v);
    else if (k === "class") e.className = v;
    else e.setAttribute(k, v === true ? "" : String(v));
  }
  append(e, children);
  return e;
}

function append(e, children) {
  for (const c of children.flat()) {
    if (c == null || c === false) continue;
    e.appendChild(c instanceof Node ? c : document.createTextNode(String(c)));
  }
}

function table(headers, rows, cls) {
  return el("table", { class: cls },
    el("thead", {}, el("tr", {}, headers.map(h => el("th", {}, h)))),
    el("tbody", {}, rows));
}

function show(...nodes) {
  const main = document.getElementById("main");
  main.replaceChildren();
  append(main, nodes);
}

function setError(msg) { document.getElementById("error").textContent = msg || ""; }

// A button that asks again before a destructive action: the first click arms it, the
// second runs it.
function dangerButton(label, id, action) {
  const b = el("button", { class: "danger", id });
  b.textContent = label;
  let armed = false;
  b.addEventListener("click", async () => {
    if (!armed) {
      armed = true;
      b.textContent = "Confirm: " + label.toLowerCase() + "?";
      b.className = "confirm";
      setTimeout(() => { if (armed) { armed = false; b.textContent = label; b.className = "danger"; } }, 5000);
      return;
    }
    armed = false;
    await act(action);
  });
  return b;
}

function button(label, id, action) {
  return el("button", { id, onclick: () => act(action) }, label);
}

async function act(action) {
  try { setError(""); await action(); await route(); } catch (e) { setError(e.message); }
}

// ---- formatting ----------------------------------------------------------------------------

const ms = v => v == null ? "–" : v >= 60000 ? (v / 60000).toFixed(1) + " min" : v >= 1000 ? (v / 1000).toFixed(1) + " s" : Math.round(v) + " ms";
const rate = v => v == null ? "–" : (v >= 100 ? v.toFixed(0) : v.toFixed(1)) + "/s";
const bytes = b => b == null ? "–" : b >= 1 << 20 ? (b / (1 << 20)).toFixed(1) + " MiB" : b >= 1024 ? (b / 1024).toFixed(1) + " KiB" : b + " B";
const when = t => t == null ? "–" : new Date(t).toISOString().replace("T", " ").replace(/\.\d+Z$/, " UTC");
const clock = t => new Date(t).toISOString().slice(11, 19);
const pretty = raw => { try { return JSON.stringify(raw, null, 2); } catch (_) { return String(raw); } };

// ---- API -----------------------------------------------------------------------------------

function token() { return sessionStorage.getItem(TOKEN_KEY); }

class Unauthorized extends Error {}

async function api(method, path, body) {
  const headers = {};
  const t = token();
  if (t) headers.Authorization = "Bearer " + t;
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const r = await fetch(path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
  if (r.status === 401) throw new Unauthorized("sign in");
  if (r.status === 204) return null;
  const text = await r.text();
  let data = null;
  try { data = text ? JSON.parse(text) : null; } catch (_) { data = null; }
  if (!r.ok) throw new Error((data && (data.detail || data.title)) || r.status + " " + r.statusText);
  return data;
}

const q = s => encodeURIComponent(s);

// ---- sign-in -------------------------------------------------------------------------------

function signinVisible(on) {
  document.getElementById("signin").hidden = !on;
  document.getElementById("main").hidden = on;
  document.getElementById("signout").hidden = on || !token();
}

function setupSignin() {
  document.getElementById("signin").addEventListener("submit", async ev => {
    ev.preventDefault();
    const t = document.getElementById("token").value.trim();
    sessionStorage.setItem(TOKEN_KEY, t);
    try {
      await api("GET", "/v1/queues");
      document.getElementById("token").value = "";
      document.getElementById("signin-error").textContent = "";
      signinVisible(false);
      await route();
    } catch (e) {
      sessionStorage.removeItem(TOKEN_KEY);
      document.getElementById("signin-error").textContent =
        e instanceof Unauthorized ? "The server does not know this token." : e.message;
    }
  });
  document.getElementById("signout").addEventListener("click", () => {
    sessionStorage.removeItem(TOKEN_KEY);
    signinVisible(true);
  });
}

// ---- history for the charts (the server's own rates and percentiles, sampled) -------------

const history = {}; // queue name -> [{t, arrival, completed, failed, waitP50.., depth}]

function record(queues) {
  const t = Date.now();
  for (const x of queues) {
    const h = history[x.name] || (history[x.name] = []);
    const c = x.counts;
    h.push({
      t, arrival: x.arrival_per_s, completed: x.completed_per_s, failed: x.failed_per_s,
      wait50: x.wait_ms_p50, wait95: x.wait_ms_p95, wait99: x.wait_ms_p99,
      run50: x.run_ms_p50, run95: x.run_ms_p95, run99: x.run_ms_p99,
      depth: c.waiting + c.scheduled + c.active + c.failed, breaker: x.breaker,
    });
    if (h.length > KEEP) h.shift();
  }
}

function totals() {
  const byTime = new Map();
  for (const h of Object.values(history)) {
    for (const s of h) {
      const k = Math.round(s.t / SAMPLE_MS);
      const a = byTime.get(k) || { t: s.t, arrival: 0, completed: 0, failed: 0 };
      a.arrival += s.arrival; a.completed += s.completed; a.failed += s.failed;
      byTime.set(k, a);
    }
  }
  return [...byTime.values()].sort((a, b) => a.t - b.t);
}

// ---- charts: SVG with axes, units and time labels ------------------------------------------

const SVG = "http://www.w3.org/2000/svg";
function s(tag, attrs, text) {
  const e = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, String(v));
  if (text != null) e.textContent = String(text);
  return e;
}

// series: [{name, color, key}] over samples [{t, [key]: value}]; fmt formats a y value;
// the y axis runs from 0 to at least minTop.
function chart(title, unit, samples, series, fmt, id, minTop = 1) {
  const W = 440, H = 200, L = 58, R = 10, T = 36, B = 36;
  const svg = s("svg", { class: "chart", width: W, height: H, viewBox: `0 0 ${W} ${H}`, role: "img", "aria-label": title, id });
  svg.appendChild(s("text", { x: L, y: 15, class: "title" }, `${title} (${unit})`));
  const vals = samples.flatMap(p => series.map(x => p[x.key])).filter(v => v != null);
  const top = niceCeil(Math.max(minTop, ...vals));
  const t0 = samples.length ? samples[0].t : Date.now() - KEEP * SAMPLE_MS;
  const t1 = samples.length > 1 ? samples[samples.length - 1].t : t0 + SAMPLE_MS;
  const x = t => L + (t - t0) / Math.max(1, t1 - t0) * (W - L - R);
  const y = v => T + (1 - v / top) * (H - T - B);
  for (let i = 0; i <= 4; i++) {
    const v = top * i / 4, yy = y(v);
    svg.appendChild(s("line", { x1: L, x2: W - R, y1: yy, y2: yy, class: i ? "grid" : "axis" }));
    svg.appendChild(s("text", { x: L - 4, y: yy + 4, "text-anchor": "end", class: "ytick" }, fmt(v)));
  }
  svg.appendChild(s("line", { x1: L, x2: L, y1: T, y2: H - B, class: "axis" }));
  for (const f of [0, 0.5, 1]) {
    const t = t0 + f * (t1 - t0);
    svg.appendChild(s("text", { x: x(t), y: H - B + 14, "text-anchor": f === 0 ? "start" : f === 1 ? "end" : "middle", class: "xtick" }, clock(t)));
  }
  svg.appendChild(s("text", { x: (L + W - R) / 2, y: H - 4, "text-anchor": "middle", class: "xlabel" }, "time (UTC)"));
  let lx = L;
  for (const ser of series) {
    const pts = samples.filter(p => p[ser.key] != null).map(p => `${x(p.t).toFixed(1)},${y(p[ser.key]).toFixed(1)}`);
    if (pts.length) svg.appendChild(s("polyline", { points: pts.join(" "), fill: "none", stroke: ser.color, "stroke-width": 1.6, class: "series" }));
    svg.appendChild(s("rect", { x: lx, y: 24, width: 10, height: 3, fill: ser.color }));
    svg.appendChild(s("text", { x: lx + 13, y: 29, class: "legend" }, ser.name));
    lx += 14 + 7 * ser.name.length;
  }
  return svg;
}

function niceCeil(v) {
  const p = Math.pow(10, Math.floor(Math.log10(v)));
  for (const m of [1, 2, 2.5, 5, 10]) if (m * p >= v) return m * p;
  return 10 * p;
}

const RATES = [
  { name: "enqueued", key: "arrival", color: "#2563eb" },
  { name: "completed", key: "completed", color: "#15803d" },
  { name: "failed", key: "failed", color: "#b91c1c" },
];
const numFmt = v => v >= 100 ? v.toFixed(0) : v >= 10 ? v.toFixed(1) : v.toFixed(2);
const msFmt = v => v >= 1000 ? (v / 1000).toFixed(1) + "s" : v.toFixed(0);

// ---- pages ---------------------------------------------------------------------------------

async function overview() {
  const { queues } = await api("GET", "/v1/queues");
  record(queues);
  const rows = queues.map(x => {
    const c = x.counts, id = x.name;
    return el("tr", { "data-queue": x.name },
      el("td", { class: "text" }, el("a", { href: "#/queues/" + q(x.name) }, x.name),
        x.paused ? el("span", { class: "paused" }, " paused") : null,
        x.starving ? el("span", { class: "warn" }, " starving") : null),
      STATES.map(st => el("td", { class: "count-" + st }, c[st])),
      el("td", {}, rate(x.arrival_per_s)), el("td", {}, rate(x.completed_per_s)), el("td", {}, rate(x.failed_per_s)),
      el("td", {}, ms(x.oldest_waiting_ms)),
      el("td", {}, ms(x.wait_ms_p50) + " / " + ms(x.wait_ms_p99)),
      el("td", {}, ms(x.run_ms_p50) + " / " + ms(x.run_ms_p99)),
      el("td", { class: x.breaker === "open" ? "err" : "" }, x.breaker),
      el("td", { title: x.reason }, x.recommended_workers + " workers"),
      el("td", { class: "text" },
        x.paused ? button("Resume", "resume-" + id, () => api("POST", `/v1/queues/${q(x.name)}/resume`))
          : button("Pause", "pause-" + id, () => api("POST", `/v1/queues/${q(x.name)}/pause`)),
        dangerButton("Purge", "purge-" + id, () => api("POST", `/v1/queues/${q(x.name)}/purge`)),
        dangerButton("Delete", "delete-" + id, () => api("DELETE", `/v1/queues/${q(x.name)}`))));
  });
  const t = totals();
  show(
    el("h2", {}, "Queues"),
    el("p", { class: "sub" }, "Counts by state; rates are the server's own meters over the last minute; refreshed every 2 s."),
    table(["queue", ...STATES, "enqueued", "completed", "failed", "oldest waiting", "wait p50 / p99", "run p50 / p99", "breaker", "advice", ""],
      rows.length ? rows : [el("tr", {}, el("td", { colspan: 19 }, "no queues yet"))], "queues"),
    el("div", { class: "charts" },
      chart("All queues: jobs per second", "jobs/s", t, RATES, numFmt, "chart-rates")));
}

function settingsRows(c) {
  const lim = r => r ? `${r.limit} per ${r.period_ms} ms, bursts of ${r.burst}` : "none";
  const off = (v, unit) => v ? v + unit : "off";
  const b = c.breaker;
  const rows = [
    ["paused", c.paused ? "yes" : "no"],
    ["order", c.order + (c.aging_ms ? `, aging every ${c.aging_ms} ms` : ", no aging")],
    ["concurrency", c.concurrency || "unlimited"],
    ["group concurrency", c.group_concurrency],
    ["rate limit", lim(c.rate_limit)],
    ["per-key rate limit", lim(c.group_rate_limit)],
    ["circuit breaker", b ? `opens at ${(b.failure_rate * 100).toFixed(0)} % failures over ${b.window_ms} ms (after ${b.min_calls} calls)` +
      (b.consecutive_failures ? ` or ${b.consecutive_failures} failures in a row` : "") +
      (b.slow_call_ms ? `; calls over ${b.slow_call_ms} ms count as failures` : "") +
      `; cooldown ${b.cooldown_ms} ms, then ${b.half_open_probes} probes` : "none"],
    ["max depth", c.max_depth ? c.max_depth + " jobs (then 429)" : "unlimited"],
    ["weight", off(c.weight, "")],
    ["starvation after", off(c.starvation_ms, " ms")],
    ["drain window", c.drain_window_ms + " ms"],
    ["attempts", c.max_attempts],
    ["lease", c.timeout_ms + " ms"],
    ["retry backoff", `${c.backoff.base_ms} ms doubling to ${c.backoff.cap_ms} ms`],
    ["retention", `completed: ${c.retention.completed_ms} ms or ${c.retention.completed_max} jobs; dead: ${c.retention.dead_ms} ms or ${c.retention.dead_max} jobs`],
  ];
  return rows.map(([k, v]) => el("tr", {}, el("th", {}, k), el("td", {}, v)));
}

let queueView = { state: "dead", kind: "", tag: "", cursor: null, pages: [] };

async function queuePage(name) {
  const x = await api("GET", "/v1/queues/" + q(name));
  record([x]);
  const st = queueView.name === name ? queueView.state : "dead";
  if (queueView.name !== name) queueView = { name, state: st, kind: "", tag: "", cursor: null };
  let url = `/v1/jobs?queue=${q(name)}&state=${q(queueView.state)}&limit=100`;
  if (queueView.kind) url += "&kind=" + q(queueView.kind);
  if (queueView.tag) url += "&tag=" + q(queueView.tag);
  if (queueView.cursor) url += "&cursor=" + queueView.cursor;
  const page = await api("GET", url);
  const jobs = page.jobs;
  const h = history[name] || [];
  const stateSelect = el("select", { id: "state", onchange: ev => { queueView.state = ev.target.value; queueView.cursor = null; route(); } },
    STATES.map(s2 => el("option", { value: s2, selected: s2 === queueView.state }, `${s2} (${x.counts[s2]})`)));
  const kind = el("input", { id: "kind", placeholder: "kind", value: queueView.kind });
  const tag = el("input", { id: "tag", placeholder: "tag", value: queueView.tag });
  const find = el("input", { id: "find", placeholder: "job id", size: 10 });
  show(
    el("h2", {}, "Queue ", x.name, x.paused ? el("span", { class: "paused" }, " paused") : null),
    el("div", { class: "toolbar" },
      x.paused ? button("Resume", "resume", () => api("POST", `/v1/queues/${q(name)}/resume`))
        : button("Pause", "pause", () => api("POST", `/v1/queues/${q(name)}/pause`)),
      button("Retry every dead job", "retry-dead", () => api("POST", `/v1/queues/${q(name)}/retry?state=dead`)),
      dangerButton("Delete completed", "delete-completed", () => api("DELETE", `/v1/queues/${q(name)}/jobs?state=completed`)),
      dangerButton("Delete dead", "delete-dead", () => api("DELETE", `/v1/queues/${q(name)}/jobs?state=dead`)),
      dangerButton("Delete cancelled", "delete-cancelled", () => api("DELETE", `/v1/queues/${q(name)}/jobs?state=cancelled`)),
      dangerButton("Purge unstarted", "purge", () => api("POST", `/v1/queues/${q(name)}/purge`))),
    el("p", { class: "sub" }, `breaker ${x.breaker} · oldest waiting ${ms(x.oldest_waiting_ms)} · advice: ${x.recommended_workers} workers (${x.reason})`),
    el("div", { class: "charts" },
      chart("Jobs per second", "jobs/s", h, RATES, numFmt, "chart-rates"),
      chart("Wait before start", "ms", h, [
        { name: "p50", key: "wait50", color: "#2563eb" }, { name: "p95", key: "wait95", color: "#d97706" },
        { name: "p99", key: "wait99", color: "#b91c1c" }], msFmt, "chart-wait", 10),
      chart("Run time", "ms", h, [
        { name: "p50", key: "run50", color: "#2563eb" }, { name: "p95", key: "run95", color: "#d97706" },
        { name: "p99", key: "run99", color: "#b91c1c" }], msFmt, "chart-run", 10),
      chart("Depth", "jobs", h, [{ name: "unfinished", key: "depth", color: "#7c3aed" }], numFmt, "chart-depth"),
      breakerChart(h)),
    el("h3", {}, "Jobs"),
    el("form", { class: "toolbar", onsubmit: ev => {
      ev.preventDefault(); queueView.kind = kind.value.trim(); queueView.tag = tag.value.trim(); route();
    } }, stateSelect, kind, tag, el("button", { type: "submit" }, "Filter")),
    el("form", { class: "toolbar", onsubmit: ev => { ev.preventDefault(); if (find.value.trim()) location.hash = "#/jobs/" + q(find.value.trim()); } },
      find, el("button", { type: "submit" }, "Find job")),
    table(["id", "kind", "attempts", "priority", "group", "tags", "created", "last error"],
      jobs.length ? jobs.map(j => el("tr", { "data-job": j.id },
        el("td", { class: "text" }, el("a", { href: "#/jobs/" + j.id }, String(j.id))),
        el("td", { class: "text" }, j.kind), el("td", {}, `${j.attempt}/${j.max_attempts}`), el("td", {}, j.priority),
        el("td", { class: "text" }, j.group || ""), el("td", { class: "text" }, (j.tags || []).join(", ")),
        el("td", {}, when(j.created_at_ms)),
        el("td", { class: "text" }, j.errors.length ? j.errors[j.errors.length - 1].message : "")))
        : [el("tr", {}, el("td", { colspan: 8 }, `no ${queueView.state} jobs` + (queueView.kind || queueView.tag ? " matching the filter" + (page.next_cursor ? " in this stretch (next page goes on)" : "") : "")))],
      "jobs"),
    page.next_cursor ? button("Next page", "next-page", async () => { queueView.cursor = page.next_cursor; }) : null,
    queueView.cursor ? button("First page", "first-page", async () => { queueView.cursor = null; }) : null,
    el("h3", {}, "Settings"),
    table(["setting", "value"], settingsRows(x.config), "kv"));
}

// Breaker state over time: 0 closed, 1 half open, 2 open (off: not drawn).
function breakerChart(h) {
  const level = { closed: 0, half_open: 1, open: 2 };
  const pts = h.map(p => ({ t: p.t, b: level[p.breaker] }));
  return chart("Breaker state", "0 closed, 1 half open, 2 open", pts, [{ name: "state", key: "b", color: "#b91c1c" }], v => v.toFixed(1), "chart-breaker", 2);
}

async function jobPage(id) {
  const j = await api("GET", "/v1/jobs/" + q(id));
  const kv = [
    ["queue", el("a", { href: "#/queues/" + q(j.queue) }, j.queue)], ["kind", j.kind], ["state", j.state],
    ["attempt", `${j.attempt} of ${j.max_attempts}`], ["priority", j.priority], ["cost", j.cost],
    ["group", j.group || "–"], ["unique key", j.unique_key || "–"], ["tags", (j.tags || []).join(", ") || "–"],
    ["created", when(j.created_at_ms)], ["runs at", when(j.run_at_ms)], ["started", when(j.started_at_ms)],
    ["finished", when(j.finished_at_ms)], ["lease until", when(j.lease_deadline_ms)], ["lease length", j.timeout_ms + " ms"],
    ["backoff", `${j.backoff.base_ms} ms doubling to ${j.backoff.cap_ms} ms`],
  ];
  show(
    el("h2", {}, `Job ${j.id}`),
    el("div", { class: "toolbar" },
      button("Retry now", "retry", () => api("POST", `/v1/jobs/${j.id}/retry`)),
      button("Cancel", "cancel", () => api("POST", `/v1/jobs/${j.id}/cancel`)),
      dangerButton("Delete", "delete", async () => { await api("DELETE", `/v1/jobs/${j.id}`); location.hash = "#/queues/" + q(j.queue); })),
    table(["", ""], kv.map(([k, v]) => el("tr", {}, el("th", {}, k), el("td", { class: k === "state" ? "state" : "" }, v))), "kv job"),
    el("h3", {}, "Payload"), el("pre", { id: "payload" }, pretty(j.payload)),
    j.result != null ? [el("h3", {}, "Result"), el("pre", { id: "result" }, pretty(j.result))] : null,
    j.progress != null ? [el("h3", {}, "Progress"), el("pre", { id: "progress" }, pretty(j.progress))] : null,
    el("h3", {}, "Attempts that failed"),
    table(["attempt", "at", "error"], j.errors.length ? j.errors.map(e => el("tr", {},
      el("td", {}, e.attempt), el("td", {}, when(e.at_ms)), el("td", { class: "text" }, e.message)))
      : [el("tr", {}, el("td", { colspan: 3 }, "none"))], "errors"));
}

async function cronPage() {
  const { cron } = await api("GET", "/v1/cron");
  show(
    el("h2", {}, "Cron"),
    el("p", { class: "sub" }, "Jobs enqueued on a schedule, once per tick across restarts and servers (docs/cron.md)."),
    table(["name", "schedule", "time zone", "queue", "kind", "missed", "last run", "next run", ""],
      cron.length ? cron.map(c => el("tr", { "data-cron": c.name },
        el("td", { class: "text" }, c.name), el("td", { class: "text" }, c.schedule), el("td", { class: "text" }, c.timezone),
        el("td", { class: "text" }, el("a", { href: "#/queues/" + q(c.job.queue) }, c.job.queue)), el("td", { class: "text" }, c.job.kind),
        el("td", {}, c.missed), el("td", {}, when(c.last_tick_ms)), el("td", {}, when(c.next_tick_ms)),
        el("td", {}, dangerButton("Delete", "delete-cron-" + c.name, () => api("DELETE", "/v1/cron/" + q(c.name))))))
        : [el("tr", {}, el("td", { colspan: 9 }, "no cron entries (weir cron set, or PUT /v1/cron/{name})"))], "cron"));
}

async function cachePage() {
  const x = await api("GET", "/v1/cache");
  show(
    el("h2", {}, "Cache"),
    table(["tier", "hit ratio", "hits", "misses", "entries", "bytes", "evicted", "invalidated", "errors"],
      ["memory", "disk", "redis"].map(name => {
        const t = x[name];
        if (!t.enabled) return el("tr", {}, el("td", {}, name), el("td", { colspan: 8 }, "off"));
        return el("tr", {}, el("td", {}, name, name === "redis" && !x.redis_up ? el("span", { class: "err" }, " down") : null),
          el("td", {}, (t.hit_ratio * 100).toFixed(1) + " %"), el("td", {}, t.hits), el("td", {}, t.misses),
          el("td", {}, t.entries ?? "–"), el("td", {}, bytes(t.bytes)), el("td", {}, t.evictions),
          el("td", {}, t.invalidations), el("td", {}, t.errors));
      }), "cache"),
    el("p", { class: "sub" }, `${x.computations} computations, ${x.coalesced} callers coalesced · ${x.redis_outages} Redis outages · ${x.resyncs} resyncs`));
}

// ---- routing -------------------------------------------------------------------------------

// One render at a time; a render asked for meanwhile (an action's, after a refresh began)
// runs once the current one ends, so it shows the action's result.
let busy = null, again = false;
async function route() {
  if (busy) { again = true; return busy; }
  busy = render();
  try { await busy; } finally { busy = null; }
  if (again) { again = false; await route(); }
}

async function render() {
  const parts = (location.hash || "#/").slice(2).split("/").map(decodeURIComponent);
  try {
    if (parts[0] === "queues" && parts[1]) await queuePage(parts[1]);
    else if (parts[0] === "jobs" && parts[1]) await jobPage(parts[1]);
    else if (parts[0] === "cron") await cronPage();
    else if (parts[0] === "cache") await cachePage();
    else await overview();
    signinVisible(false);
    setError("");
  } catch (e) {
    if (e instanceof Unauthorized) signinVisible(true);
    else setError("refresh failed: " + e.message);
  }
}

// Pages that show live numbers refresh; a job page and forms being typed into do not.
function tick() {
  const live = !location.hash.startsWith("#/jobs/") && !(document.activeElement && document.activeElement.tagName === "INPUT");
  if (live && !document.getElementById("main").hidden) route();
  else if (!location.hash.startsWith("#/queues/")) api("GET", "/v1/queues").then(record).catch(() => {});
}

document.addEventListener("DOMContentLoaded", () => {
  setupSignin();
  window.addEventListener("hashchange", () => { queueView.cursor = null; route(); });
  route();
  setInterval(tick, SAMPLE_MS);
});
