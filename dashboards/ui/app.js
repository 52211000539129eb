// jasper dashboards UI: vanilla JS over the JSON API, no build step.
"use strict";

const CLASS_COLOURS = {
  tcp_synack: "#d62728", tcp_syn: "#1f77b4", tcp_rst: "#ff7f0e", tcp_fin: "#9467bd", tcp_push: "#8c564b",
  tcp_ack: "#e377c2", tcp_other: "#7f7f7f", udp: "#2ca02c", icmp: "#bcbd22", other: "#17becf",
};
const VIEWS = ["overview", "map", "top", "early", "findings", "sensors"];

const state = { me: null, csrf: "", sensorsLoaded: false };
const $ = (sel) => document.querySelector(sel);
const fmt = (n) => (n == null ? "" : Number(n).toLocaleString("en-US"));

function el(tag, attrs, ...kids) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v == null || v === false) continue;
    if (k === "class") e.className = v;
    else if (k.startsWith("on")) e.addEventListener(k.slice(2), v);
    else e.setAttribute(k, v === true ? "" : v);
  }
  for (const k of kids.flat()) if (k != null) e.append(k instanceof Node ? k : String(k));
  return e;
}

class HTTPError extends Error {
  constructor(status, msg) { super(msg); this.status = status; }
}

async function api(path, opts = {}) {
  const init = { method: opts.method || "GET", headers: {}, credentials: "same-origin" };
  if (init.method !== "GET") init.headers["X-CSRF-Token"] = state.csrf;
  if (opts.body) { init.headers["Content-Type"] = "application/json"; init.body = JSON.stringify(opts.body); }
  const r = await fetch(path, init);
  if (r.status === 401 && !opts.noRedirect) { showLogin(); throw new HTTPError(401, "login required"); }
  if (r.status === 204) return null;
  const body = await r.json().catch(() => ({}));
  if (!r.ok) throw new HTTPError(r.status, body.error || r.statusText);
  return body;
}

// ---- routing and filters -------------------------------------------------

function route() {
  const [view, qs] = location.hash.replace(/^#/, "").split("?");
  return { view: VIEWS.includes(view) ? view : "overview", params: new URLSearchParams(qs || "") };
}

function filterParams() {
  const p = new URLSearchParams();
  const put = (k, v) => { if (v) p.set(k, v); };
  put("range", $("#f-range").value);
  put("sensor", $("#f-sensor").value);
  put("country", $("#f-country").value.trim().toUpperCase());
  put("protocol", $("#f-protocol").value);
  put("port", $("#f-port").value.trim());
  return p;
}

function setFilters(p) {
  $("#f-range").value = p.get("range") || "6h";
  const s = p.get("sensor") || "";
  if (s && ![...$("#f-sensor").options].some((o) => o.value === s)) $("#f-sensor").append(el("option", { value: s }, s));
  $("#f-sensor").value = s;
  $("#f-country").value = p.get("country") || "";
  $("#f-protocol").value = p.get("protocol") || "";
  $("#f-port").value = p.get("port") || "";
}

function go(view, params) {
  const qs = params.toString();
  location.hash = view + (qs ? "?" + qs : "");
}

function applyFilters(ev) {
  if (ev) ev.preventDefault();
  go(route().view, filterParams());
}

function pickCountry(c) {
  const p = filterParams();
  p.set("country", c);
  go(route().view, p);
}

async function render() {
  if (!state.me) return;
  const { view, params } = route();
  setFilters(params);
  for (const a of document.querySelectorAll("#tabs a")) {
    a.classList.toggle("active", a.dataset.view === view);
    a.href = "#" + a.dataset.view + (params.toString() ? "?" + params : "");
  }
  const target = $("#view");
  $("#status").textContent = "loading…";
  const t0 = performance.now();
  try {
    const node = await VIEW_RENDERERS[view](params);
    target.replaceChildren(node);
    target.dataset.view = view;
    target.dataset.ready = params.toString();
    $("#status").textContent = `updated ${new Date().toLocaleTimeString()} · ${Math.round(performance.now() - t0)} ms`;
  } catch (e) {
    if (e.status === 401) return;
    target.replaceChildren(el("div", { class: "card error" }, "Error: " + e.message));
    target.dataset.ready = params.toString();
    $("#status").textContent = "";
  }
}

// ---- charts ----------------------------------------------------------------

const SVGNS = "http://www.w3.org/2000/svg";
function svg(tag, attrs, ...kids) {
  const e = document.createElementNS(SVGNS, tag);
  for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, v);
  for (const k of kids) if (k) e.append(k);
  return e;
}

function niceMax(v) {
  if (v <= 0) return 1;
  const p = Math.pow(10, Math.floor(Math.log10(v)));
  for (const m of [1, 2, 2.5, 5, 10]) if (m * p >= v) return m * p;
  return 10 * p;
}

function timeLabel(t, spanMs) {
  const d = new Date(t);
  const hm = d.toISOString().slice(11, 16);
  return spanMs > 36 * 3600e3 ? d.toISOString().slice(5, 10) + " " + hm : hm;
}

// stackedChart draws series [{name, colour, values[]}] over times[] as
// stacked areas (stacked=true) or lines.
function chart(times, series, { stacked = true, height = 220, label = "" } = {}) {
  const W = 900, H = height, L = 56, R = 10, T = 10, B = 24;
  const n = times.length;
  const tops = new Array(n).fill(0);
  let max = 0;
  for (let i = 0; i < n; i++) {
    let s = 0;
    for (const se of series) s = stacked ? s + se.values[i] : Math.max(s, se.values[i]);
    max = Math.max(max, s);
  }
  max = niceMax(max);
  const lead = max / Math.pow(10, Math.floor(Math.log10(max)));
  const ticks = lead === 2 ? 4 : 5;
  const x = (i) => L + (n <= 1 ? 0 : (i / (n - 1)) * (W - L - R));
  const y = (v) => T + (1 - v / max) * (H - T - B);
  const root = svg("svg", { viewBox: `0 0 ${W} ${H}`, class: "chart", role: "img", "aria-label": label });
  for (let k = 0; k <= ticks; k++) {
    const v = (max * k) / ticks, yy = y(v);
    root.append(svg("line", { x1: L, x2: W - R, y1: yy, y2: yy, class: "axis" }));
    const t = svg("text", { x: L - 4, y: yy + 3, "text-anchor": "end" });
    const short = (x, u) => (Number.isInteger(x) ? String(x) : x.toFixed(1)) + u;
    t.textContent = v >= 1e6 ? short(v / 1e6, "M") : v >= 1e3 ? short(v / 1e3, "k") : String(Math.round(v * 10) / 10);
    root.append(t);
  }
  const span = n > 1 ? times[n - 1] - times[0] : 0;
  for (let k = 0; k < 6 && n > 1; k++) {
    const i = Math.round((k / 5) * (n - 1));
    const t = svg("text", { x: x(i), y: H - 6, "text-anchor": k === 0 ? "start" : k === 5 ? "end" : "middle" });
    t.textContent = timeLabel(times[i], span);
    root.append(t);
  }
  for (const se of series) {
    const pts = [];
    const base = [];
    for (let i = 0; i < n; i++) {
      const lo = stacked ? tops[i] : 0;
      const hi = lo + se.values[i];
      pts.push(`${x(i).toFixed(1)},${y(hi).toFixed(1)}`);
      base.push(`${x(i).toFixed(1)},${y(lo).toFixed(1)}`);
      if (stacked) tops[i] = hi;
    }
    if (!pts.length) continue;
    const attrs = stacked
      ? { d: "M" + pts.join("L") + "L" + base.reverse().join("L") + "Z", fill: se.colour, "fill-opacity": "0.85", stroke: "none" }
      : { d: "M" + pts.join("L"), fill: "none", stroke: se.colour, "stroke-width": "2" };
    const path = svg("path", attrs);
    path.dataset.series = se.name;
    const tt = svg("title");
    tt.textContent = se.name;
    path.append(tt);
    root.append(path);
  }
  return root;
}

function legend(items) {
  return el("div", { class: "legend" }, items.map(([name, colour]) => {
    const i = el("i");
    i.style.background = colour;
    return el("span", {}, i, name);
  }));
}

function barTable(title, entries, { keyLabel, keyFmt = (k) => k, onKey, sources = true, note } = {}) {
  const max = entries.reduce((m, e) => Math.max(m, e.packets), 0) || 1;
  const rows = entries.map((e) => {
    const bar = el("span");
    bar.style.width = ((100 * e.packets) / max).toFixed(1) + "%";
    const key = onKey ? el("a", { href: "#", onclick: (ev) => { ev.preventDefault(); onKey(e.key); } }, keyFmt(e.key)) : keyFmt(e.key);
    return el("tr", {}, el("td", {}, key), el("td", { class: "num" }, fmt(e.packets)),
      sources ? el("td", { class: "num" }, fmt(e.sources)) : null, el("td", { class: "bar" }, bar));
  });
  return el("div", { class: "card", "data-list": title },
    el("h2", {}, title, note ? el("small", {}, " · " + note) : null),
    entries.length
      ? el("table", {}, el("tr", {}, el("th", {}, keyLabel), el("th", { class: "num" }, "packets"),
        sources ? el("th", { class: "num" }, "sources") : null, el("th", {}, "")), rows)
      : el("div", { class: "empty" }, "no data for these filters"));
}

const countryFmt = (k) => k || "unknown";

// ---- views -------------------------------------------------------------------

const VIEW_RENDERERS = {
  async overview(p) {
    const ov = await api("api/overview?" + p);
    const times = [];
    const from = Date.parse(ov.from), to = Date.parse(ov.to), step = ov.step_seconds * 1000;
    const byT = new Map(ov.points.map((pt) => [Date.parse(pt.t), pt]));
    for (let t = Math.floor(from / step) * step; t < to; t += step) times.push(t);
    const series = ov.classes.map((c) => ({ name: c, colour: CLASS_COLOURS[c] || "#999",
      values: times.map((t) => (byT.get(t) ? byT.get(t).packets[c] || 0 : 0)) }))
      .filter((s) => s.values.some((v) => v > 0));
    const srcs = times.map((t) => (byT.get(t) ? byT.get(t).sources : 0));
    const total = ov.points.reduce((s, pt) => s + Object.values(pt.packets).reduce((a, b) => a + b, 0), 0);
    const peak = Math.max(0, ...srcs);
    const approx = ov.points.some((pt) => pt.approx);
    return el("div", {},
      el("div", { class: "card kpis" },
        el("div", { class: "kpi" }, el("b", { id: "kpi-packets" }, fmt(total)), el("span", {}, "packets")),
        el("div", { class: "kpi" }, el("b", {}, fmt(peak)), el("span", {}, `peak distinct sources per ${ov.step_seconds / 60} min${approx ? " (estimate)" : ""}`)),
        el("div", { class: "kpi" }, el("b", {}, String(series.length)), el("span", {}, "traffic classes seen"))),
      el("div", { class: "card" }, el("h2", {}, "Packets by traffic class ", el("small", {}, `per ${ov.step_seconds / 60} min`)),
        chart(times, series, { label: "packets by class" }), legend(series.map((s) => [s.name, s.colour]))),
      el("div", { class: "card" }, el("h2", {}, "Distinct sources"),
        chart(times, [{ name: "sources", colour: "#0d1b2a", values: srcs }], { stacked: false, height: 160, label: "distinct sources" })));
  },

  async map(p) {
    const r = await api("api/map?" + p);
    const counts = {};
    for (const e of r.entries) if (e.key) counts[e.key] = e;
    const box = el("div", { id: "map-box" });
    await JasperMap.draw(box, counts, "sources", pickCountry);
    return el("div", { class: "grid map-grid" },
      el("div", { class: "card" }, el("h2", {}, "Attack map ", el("small", {}, "distinct sources by country (log scale); click a country to filter")), box),
      barTable("Source countries", r.entries.slice(0, 25), { keyLabel: "country", keyFmt: countryFmt, onKey: pickCountry }));
  },

  async top(p) {
    const q = new URLSearchParams(p);
    q.set("limit", "15");
    const [tcp, udp, cc, asn, fp] = await Promise.all(["tcp_ports", "udp_ports", "countries", "asns", "fingerprints"]
      .map((d) => api(`api/top/${d}?` + q)));
    const pickPort = (port) => { const f = filterParams(); f.set("port", port); go("top", f); };
    let hosts;
    try {
      const h = await api("api/hosts?" + q);
      hosts = el("div", { class: "card", "data-list": "hosts" },
        el("h2", {}, "Top sources ", el("small", {}, "host-level data of your constituency only")),
        h.hosts.length ? el("table", {}, el("tr", {}, ["address", "country", "ASN", "packets", "ports", "classes", "sensors"].map((c) => el("th", {}, c))),
          h.hosts.map((x) => el("tr", {}, el("td", {}, el("code", { class: "ip" }, x.ip)), el("td", {}, countryFmt(x.country)), el("td", {}, "AS" + x.asn),
            el("td", { class: "num" }, fmt(x.packets)), el("td", {}, (x.ports || []).join(" ") + (x.more_ports ? " …" : "")),
            el("td", {}, (x.classes || []).join(" ")), el("td", {}, (x.sensors || []).join(" ")))))
          : el("div", { class: "empty" }, "no sources of your constituency for these filters"));
    } catch (e) {
      if (e.status !== 403) throw e;
      hosts = el("div", { class: "card", "data-list": "hosts" }, el("h2", {}, "Top sources"), el("div", { class: "empty" }, e.message));
    }
    return el("div", {}, el("div", { class: "grid" },
      barTable("TCP destination ports", tcp.entries, { keyLabel: "port", onKey: pickPort }),
      barTable("UDP destination ports", udp.entries, { keyLabel: "port", onKey: pickPort }),
      barTable("Source countries", cc.entries, { keyLabel: "country", keyFmt: countryFmt, onKey: pickCountry }),
      barTable("Source ASNs", asn.entries, { keyLabel: "ASN", keyFmt: (k) => (k === "0" ? "unknown" : "AS" + k) }),
      barTable("Tool fingerprints", fp.entries, { keyLabel: "fingerprint", sources: false, note: "packets carrying the signature" })), hosts);
  },

  async early(p) {
    const r = await api("api/early-warning?" + p);
    const subject = (s) => s.type === "country_surge" ? "country " + s.country
      : s.type === "fingerprint_surge" ? "fingerprint " + s.fingerprint : `${s.protocol || "ip"}/${s.port ?? 0}`;
    return el("div", { class: "card" }, el("h2", {}, "Early warning ", el("small", {}, "current surges against their baseline")),
      r.surges.length ? el("table", { id: "surges" },
        el("tr", {}, ["", "subject", "kind", "baseline", "observed", "jump", "score", "top countries", "since", "why"].map((c) => el("th", {}, c))),
        r.surges.map((s) => el("tr", {}, el("td", {}, el("span", { class: "tag " + s.state }, s.state)), el("td", {}, el("b", {}, subject(s))),
          el("td", {}, s.type.replace("_", " ")), el("td", { class: "num" }, s.baseline.toFixed(1)), el("td", { class: "num" }, s.observed.toFixed(1)),
          el("td", { class: "num " + (s.jump >= 5 ? "bad" : "warn") }, s.jump ? "×" + s.jump.toFixed(1) : "new"),
          el("td", { class: "num" }, s.score.toFixed(1)), el("td", {}, (s.top_countries || []).join(" ")),
          el("td", {}, new Date(s.detected_at).toISOString().slice(0, 16).replace("T", " ")), el("td", {}, s.summary))))
        : el("div", { class: "empty" }, "no current surges for these filters"));
  },

  async findings(p) {
    const r = await api("api/findings?" + p);
    const act = async (id, what) => {
      const body = what === "silence" ? { for: "24h" } : {};
      await api(`api/findings/${encodeURIComponent(id)}/${what}`, { method: "POST", body });
      render();
    };
    const links = el("div", { class: "links" },
      el("a", { href: "api/findings/export.csv?" + p, download: "jasper-findings.csv", id: "export-csv" }, "Export CSV"),
      el("a", { href: "api/findings/export.stix?" + p, download: "jasper-findings.stix.json", id: "export-stix" }, "Export STIX 2.1"));
    const scope = state.me.role === "coordinator" ? "all constituencies"
      : [...(state.me.constituency.countries || []), ...(state.me.constituency.prefixes || [])].join(", ");
    return el("div", { class: "card" }, el("h2", {}, "Findings ", el("small", {}, "infected hosts and DoS victims of " + scope)), links,
      r.findings.length ? el("table", { id: "findings-table" },
        el("tr", {}, ["", "host", "type", "country", "ASN", "ports", "packets", "dst IPs", "first seen", "last seen", "evidence", "status", ""].map((c) => el("th", {}, c))),
        r.findings.map((f) => el("tr", { "data-id": f.id }, el("td", {}, el("span", { class: "tag " + f.state }, f.state)),
          el("td", {}, el("code", { class: "ip" }, f.ip)), el("td", {}, f.type.replace("_", " ")), el("td", {}, f.country), el("td", {}, "AS" + f.asn),
          el("td", {}, (f.ports || []).slice(0, 8).join(" ") + ((f.ports || []).length > 8 ? " …" : "")),
          el("td", { class: "num" }, fmt(f.packets)), el("td", { class: "num" }, fmt(f.dst_ips)),
          el("td", { class: "time" }, f.first_seen.slice(0, 16).replace("T", " ")), el("td", { class: "time" }, f.last_seen.slice(0, 16).replace("T", " ")),
          el("td", {}, f.summary, " ", el("span", { class: "muted" }, (f.classes || []).join(" "), " · ", (f.sensors || []).join(" "),
            Object.entries(f.fingerprints || {}).map(([k, v]) => ` · ${k} ×${fmt(v)}`).join(""))),
          el("td", { class: "status-cell" }, f.acked_by ? "acked by " + f.acked_by : "", f.silenced_until ? " silenced until " + f.silenced_until.slice(0, 16).replace("T", " ") : ""),
          el("td", { class: "actions" }, el("button", { type: "button", class: "ack", onclick: () => act(f.id, "ack") }, "Acknowledge"),
            el("button", { type: "button", class: "silence", onclick: () => act(f.id, "silence") }, "Silence 24 h")))))
        : el("div", { class: "empty" }, "no findings in your constituency for these filters"));
  },

  async sensors() {
    const r = await api("api/sensors");
    fillSensorOptions(r.sensors);
    const now = Date.now();
    const age = (t) => {
      if (!t || t.startsWith("0001")) return "never";
      const s = Math.round((now - Date.parse(t)) / 1000);
      return s < 120 ? s + " s ago" : s < 7200 ? Math.round(s / 60) + " min ago" : Math.round(s / 3600) + " h ago";
    };
    return el("div", { class: "card" }, el("h2", {}, "Sensors ", el("small", {}, "health as committed in the hub's log")),
      r.sensors.length ? el("table", { id: "sensors-table" },
        el("tr", {}, ["sensor", "country", "last batch", "packets/s", "seen", "summarised", "kernel drops", "decode errors", "shed batches / rows", "certificate"].map((c) => el("th", {}, c))),
        r.sensors.map((s) => {
          const days = s.cert_expiry ? (Date.parse(s.cert_expiry) - now) / 86400e3 : null;
          return el("tr", {}, el("td", {}, el("b", {}, s.id)), el("td", {}, s.country), el("td", {}, age(s.last_received_at)),
            el("td", { class: "num" }, s.packet_rate.toFixed(2)), el("td", { class: "num" }, fmt(s.packets_seen)),
            el("td", { class: "num" }, fmt(s.packets_summarised)), el("td", { class: "num " + (s.kernel_drops ? "warn" : "") }, fmt(s.kernel_drops)),
            el("td", { class: "num" }, fmt(s.decode_errors)), el("td", { class: "num " + (s.shed_batches ? "bad" : "") }, `${fmt(s.shed_batches)} / ${fmt(s.shed_rows)}`),
            el("td", { class: days != null && days < 7 ? "bad" : "" }, days == null ? "unknown" : `expires in ${days.toFixed(1)} d`));
        }))
        : el("div", { class: "empty" }, "no sensor has sent a batch yet"));
  },
};

function fillSensorOptions(sensors) {
  const sel = $("#f-sensor");
  const cur = sel.value;
  sel.replaceChildren(el("option", { value: "" }, "all"), ...sensors.map((s) => el("option", { value: s.id }, s.id)));
  sel.value = cur;
  state.sensorsLoaded = true;
}

// ---- session -------------------------------------------------------------------

function showLogin() {
  state.me = null;
  $("#app").hidden = true;
  $("#who").hidden = true;
  $("#login-view").hidden = false;
  $("#login-user").focus();
}

async function showApp(me) {
  state.me = me;
  state.csrf = me.csrf_token || "";
  $("#login-view").hidden = true;
  $("#app").hidden = false;
  $("#who").hidden = false;
  const scope = me.role === "coordinator" ? "all constituencies"
    : [...(me.constituency.countries || []), ...(me.constituency.prefixes || [])].join(", ");
  $("#who-name").textContent = `${me.user} · ${me.role} · ${scope}`;
  if (!state.sensorsLoaded) api("api/sensors").then((r) => fillSensorOptions(r.sensors)).catch(() => {});
  await render();
}

async function login(ev) {
  ev.preventDefault();
  $("#login-error").hidden = true;
  try {
    const me = await api("api/login", { method: "POST", body: { user: $("#login-user").value, password: $("#login-password").value }, noRedirect: true });
    $("#login-password").value = "";
    await showApp(me);
  } catch (e) {
    $("#login-error").textContent = e.status === 429 ? "Too many attempts: wait a little." : e.status === 401 ? "Wrong user name or password." : e.message;
    $("#login-error").hidden = false;
  }
}

async function logout() {
  try { await api("api/logout", { method: "POST", noRedirect: true }); } catch (e) { /* session already gone */ }
  state.csrf = "";
  state.sensorsLoaded = false;
  $("#view").replaceChildren();
  showLogin();
}

document.addEventListener("DOMContentLoaded", async () => {
  $("#login-form").addEventListener("submit", login);
  $("#logout").addEventListener("click", logout);
  $("#filters").addEventListener("submit", applyFilters);
  for (const id of ["#f-range", "#f-sensor", "#f-protocol"]) $(id).addEventListener("change", applyFilters);
  $("#f-clear").addEventListener("click", () => go(route().view, new URLSearchParams()));
  window.addEventListener("hashchange", render);
  try {
    showApp(await api("api/me", { noRedirect: true }));
  } catch (e) {
    showLogin();
  }
});
