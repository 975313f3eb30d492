// The Trellis dashboard: draws /api/state, kept live by /api/events. No framework, no
// build step: the control plane serves this file as it is. docs/dashboard.md.
"use strict";
const $ = (s, el = document) => el.querySelector(s);
const meta = (n) => document.querySelector(`meta[name="${n}"]`).content;
const esc = (s) => String(s ?? "").replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
const pct = (v) => (v == null ? "–" : (v * 100).toFixed(2) + "%");
const ms = (v) => (v == null ? "–" : v < 10 ? v.toFixed(2) + "ms" : Math.round(v) + "ms");
const rps = (v) => (v == null ? "–" : v.toFixed(1));
const ago = (now, t) => (t ? Math.max(0, now - t) + "s ago" : "–");
const health = (e) => (!e || !e.requests ? "idle" : e.successRate >= 0.99 ? "ok" : e.successRate >= 0.95 ? "warn" : "bad");
let state = null;

function route() {
  const [, view = "graph", ...rest] = location.hash.split("/");
  return { view, arg: decodeURIComponent(rest.join("/")) };
}

function render() {
  if (!state) return;
  const { view, arg } = route();
  document.querySelectorAll("nav a").forEach((a) => a.classList.toggle("on", a.dataset.view === view));
  const main = $("#main");
  if (view === "service") main.innerHTML = servicePage(arg);
  else if (view === "proxies") main.innerHTML = proxiesPage();
  else if (view === "canary") main.innerHTML = canaryPage();
  else main.innerHTML = graphPage();
  $("#foot").textContent = `last ${Math.round(state.coveredSeconds)}s · ${state.proxies.length} proxies · ${state.replicas} control-plane replica(s)` +
    (state.dropped ? ` · ${state.dropped} requests over the window's edge limit` : "") +
    (state.unreachable.length ? ` · missing replicas: ${state.unreachable.join("; ")}` : "") +
    (state.configErrors.length ? ` · config: ${state.configErrors.length} error(s), see trellis status` : "");
}

// Layers: a Service sits one right of its furthest caller; Services with no calls last.
function layout(services, edges) {
  const names = services.map((s) => s.name);
  const calls = edges.filter((e) => e.from !== e.to);
  const layer = Object.fromEntries(names.map((n) => [n, 0]));
  calls.forEach((e) => { if (!(e.from in layer)) layer[e.from] = 0; });
  for (let i = 0; i < names.length + 2; i++) {
    calls.forEach((e) => { if (layer[e.to] < layer[e.from] + 1 && layer[e.from] < 30) layer[e.to] = layer[e.from] + 1; });
  }
  const touched = new Set(calls.flatMap((e) => [e.from, e.to]));
  const max = Math.max(0, ...Object.values(layer));
  const cols = {};
  Object.keys(layer).forEach((n) => {
    const l = touched.has(n) ? layer[n] : max + 1;
    (cols[l] = cols[l] || []).push(n);
  });
  const pos = {};
  Object.entries(cols).forEach(([l, ns]) => ns.sort().forEach((n, i) => (pos[n] = { x: 20 + l * 370, y: 30 + i * 110 })));
  return pos;
}

function graphPage() {
  const svc = Object.fromEntries(state.services.map((s) => [s.name, s]));
  const pos = layout(state.services, state.edges);
  const W = 230, H = 56;
  const width = Math.max(...Object.values(pos).map((p) => p.x)) + W + 40;
  const height = Math.max(...Object.values(pos).map((p) => p.y)) + H + 40;
  let edges = "", nodes = "";
  state.edges.forEach((e) => {
    const a = pos[e.from], b = pos[e.to];
    if (!a || !b) return;
    const x1 = a.x + W, y1 = a.y + H / 2, x2 = b.x, y2 = b.y + H / 2, mx = (x1 + x2) / 2;
    const open = e.breaker === "open" || e.breaker === "forced_open";
    const line1 = `${rps(e.rps)} rps · ${pct(e.successRate)}`;
    const line2 = `p99 ${ms(e.p99)}${e.mtls ? " · mTLS" : ""}${open ? " · breaker " + e.breaker.replace("_", "-") : ""}`;
    const lx = x1 + (x2 - x1) * 0.5, ly = y1 + (y2 - y1) * 0.5;
    edges += `<g class="edge ${health(e)} ${open ? "open" : ""}" data-edge="${esc(e.from)}->${esc(e.to)}" data-breaker="${esc(e.breaker || "")}" data-mtls="${e.mtls}">` +
      `<path d="M${x1},${y1} C${mx},${y1} ${mx},${y2} ${x2},${y2}" marker-end="url(#arrow)"/>` +
      `<text x="${lx}" y="${ly - 20}" text-anchor="middle"><tspan x="${lx}">${esc(line1)}</tspan><tspan x="${lx}" dy="14">${esc(line2)}</tspan></text></g>`;
  });
  Object.entries(pos).forEach(([name, p]) => {
    const s = svc[name];
    const breaker = s && s.breaker !== "closed" ? s.breaker : "";
    const ejected = s ? s.ejected.length : 0;
    const c = s && s.callers;
    const sub = c ? `${rps(c.rps)} rps · ${pct(c.successRate)}` : s && !s.service ? "a workload no Service selects" : s ? `${s.instances.length} instance(s)` : "";
    nodes += `<g class="node ${breaker}" data-node="${esc(name)}" data-breaker="${breaker || "closed"}" data-ejected="${ejected}">` +
      `<a href="#/service/${encodeURIComponent(name)}"><rect x="${p.x}" y="${p.y}" width="${W}" height="${H}"/>` +
      `<text x="${p.x + 10}" y="${p.y + 20}" font-weight="600">${esc(name)}</text>` +
      `<text x="${p.x + 10}" y="${p.y + 40}">${esc(sub)}${breaker ? " · breaker " + breaker.replace("_", "-") : ""}${ejected ? ` · ${ejected} ejected` : ""}</text></a></g>`;
  });
  return `<h2>Service graph</h2><p class="muted">Edges as the callers' proxies count them: requests per second, success rate, p99. “mTLS”: every request went over mTLS. A red frame is a Service whose callers' breakers are open.</p>` +
    `<svg viewBox="0 0 ${width} ${height}" style="width:100%;max-width:${width}px" role="img" aria-label="service graph"><defs><marker id="arrow" viewBox="0 0 10 10" refX="10" refY="5" markerWidth="7" markerHeight="7" orient="auto"><path d="M0,0 L10,5 L0,10 z" fill="#8a94a3"/></marker></defs>${edges}${nodes}</svg>`;
}

function numbersCards(title, n) {
  if (!n) return `<div class="card"><span class="muted">${esc(title)}</span><b>–</b>no requests</div>`;
  return `<div class="card"><span class="muted">${esc(title)}</span><b class="${health(n)}">${pct(n.successRate)}</b>${rps(n.rps)} rps · p50 ${ms(n.p50)} · p95 ${ms(n.p95)} · p99 ${ms(n.p99)}</div>`;
}

function sparkline(series) {
  if (!series.length) return "";
  const W = 450, H = 60, max = Math.max(1, ...series.map((s) => s[0]));
  const pt = (i, v) => `${(i / Math.max(1, series.length - 1)) * W},${H - (v / max) * H}`;
  const all = series.map((s, i) => pt(i, s[0])).join(" ");
  const ok = series.map((s, i) => pt(i, s[1])).join(" ");
  return `<svg width="${W}" height="${H + 4}" aria-label="requests per 10s"><polyline points="${all}" fill="none" stroke="#c53030"/><polyline points="${ok}" fill="none" stroke="#1f8a4c"/></svg><div class="muted">requests (red) and successes (green) per 10 s, last 15 minutes</div>`;
}

function servicePage(name) {
  const s = state.services.find((x) => x.name === name);
  if (!s) return `<p>No Service ${esc(name)}. <a href="#/graph">Back to the graph</a></p>`;
  const routes = state.routes.filter((r) => r.service.split("/").reverse().join(".") === name || r.backends.some((b) => b.cluster.startsWith(name.split(".")[0])));
  const inst = s.instances.map((p) => `<tr><td>${esc(p.namespace)}/${esc(p.workload)}</td><td>${p.connected ? "yes" : "no"}</td><td>${esc(p.ackedVersion || "–")}${p.ackedVersion && p.ackedVersion === p.latestVersion ? " (latest)" : ""}</td><td class="${p.lastNackError ? "bad" : ""}">${esc(p.lastNackError || "–")}</td><td>${p.certificateExpiry ? new Date(p.certificateExpiry * 1000).toISOString().replace(".000", "") : "–"}</td><td>${s.ejected.includes(p.namespace + "/" + p.workload) ? '<span class="bad">ejected</span>' : "serving"}</td></tr>`).join("");
  const rt = routes.map((r) => `<tr><td>${esc(r.route)}</td><td>${esc(r.match)}</td><td>${r.backends.map((b) => `${esc(b.cluster)}=${b.weight}`).join(", ")}</td></tr>`).join("");
  const errs = s.errors.map((e) => `<tr><td><code>${esc(e.code)}</code></td><td class="n">${e.count}</td></tr>`).join("");
  return `<h2>${esc(name)}</h2><div class="cards">${numbersCards("as its callers see it", s.callers)}${numbersCards("at its own proxies", s.inbound)}` +
    `<div class="card"><span class="muted">breakers open</span><b class="${s.openBreakers ? "bad" : "ok"}">${s.openBreakers}</b>ejected: ${s.ejected.length ? s.ejected.map(esc).join(", ") : "none"}</div></div>` +
    sparkline(s.series || []) +
    `<h3>Instances</h3>${inst ? `<table><tr><th>proxy</th><th>connected</th><th>config</th><th>last NACK</th><th>certificate expires</th><th>health</th></tr>${inst}</table>` : '<p class="muted">No proxy serves it.</p>'}` +
    `<h3>Routes</h3>${rt ? `<table><tr><th>route</th><th>match</th><th>backends</th></tr>${rt}</table>` : '<p class="muted">None.</p>'}` +
    `<h3>Policies</h3>${s.policies.length ? "<ul>" + s.policies.map((p) => `<li>${esc(p)}</li>`).join("") + "</ul>" : '<p class="muted">None.</p>'}` +
    `<h3>Errors the proxies generated</h3>${errs ? `<table><tr><th>trellis-error</th><th>count</th></tr>${errs}</table>` : '<p class="muted">None in the window.</p>'}`;
}

function proxiesPage() {
  const rows = state.proxies.map((p) => `<tr data-proxy="${esc(p.namespace)}/${esc(p.workload)}"><td>${esc(p.namespace)}/${esc(p.workload)}</td><td>${esc(p.services.join(", ") || "–")}</td><td>${p.connected ? "yes" : '<span class="bad">no</span>'}</td><td>${esc(p.ackedVersion || "–")}${p.ackedVersion && p.ackedVersion === p.latestVersion ? " (latest)" : p.latestVersion ? ` <span class="warn">(stale: latest ${esc(p.latestVersion)})</span>` : ""}</td><td class="${p.lastNackError ? "bad" : ""}">${esc(p.lastNackError || "–")}</td><td>${p.mtls ? "yes" : "no"}</td><td>${ago(state.now, p.lastSummary)}</td></tr>`).join("");
  const errs = state.configErrors.map((e) => `<li class="bad">${esc(e)}</li>`).join("");
  return `<h2>Proxies</h2>${errs ? `<p>The last config change was refused:</p><ul>${errs}</ul>` : ""}<table><tr><th>workload</th><th>services</th><th>connected</th><th>acked config</th><th>last NACK</th><th>mTLS</th><th>last summary</th></tr>${rows}</table>`;
}

function canaryPage() {
  const shift = meta("trellis-shift") === "on";
  const routes = state.routes.filter((r) => r.backends.length > 1);
  if (!routes.length) return `<h2>Canary</h2><p class="muted">No route splits its traffic between backends.</p>`;
  return `<h2>Canary</h2><p class="muted">Each split route's backends side by side, as the callers' proxies count them.${shift ? "" : " Read-only: shift with <code>trellis shift</code>, or start trellis-control with --dashboard-shift."}</p>` +
    routes.map((r) => {
      const total = r.backends.reduce((a, b) => a + b.weight, 0) || 1;
      const rows = r.backends.map((b) => `<tr data-backend="${esc(b.cluster)}" data-weight="${b.weight}"><td>${esc(b.cluster)}</td><td class="n">${b.weight}</td><td><span class="bar" style="width:${(b.weight / total) * 120}px"></span> ${((b.weight / total) * 100).toFixed(0)}%</td><td class="n ${health(b)}">${pct(b.successRate)}</td><td class="n">${rps(b.rps)}</td><td class="n">${ms(b.p50)}</td><td class="n">${ms(b.p99)}</td>${shift ? `<td><input type="number" min="0" max="1000000" value="${b.weight}" data-shift="${esc(b.cluster.split(":")[0].split(".")[0])}"></td>` : ""}</tr>`).join("");
      return `<section data-canary-route="${esc(r.route)}"><h3>${esc(r.route)} <span class="muted">${esc(r.match)}</span></h3><table><tr><th>backend</th><th>weight</th><th>share</th><th>success</th><th>rps</th><th>p50</th><th>p99</th>${shift ? "<th>new weight</th>" : ""}</tr>${rows}</table>${shift ? `<button data-apply="${esc(r.route)}">Shift</button> <span class="muted" data-result></span>` : ""}</section>`;
    }).join("");
}

async function applyShift(routeName, section) {
  const weights = {};
  section.querySelectorAll("input[data-shift]").forEach((i) => (weights[i.dataset.shift] = Number(i.value)));
  const out = section.querySelector("[data-result]");
  out.textContent = "shifting…";
  const res = await fetch("/api/shift", { method: "POST", headers: { "content-type": "application/json", "x-trellis-csrf": meta("trellis-csrf") }, body: JSON.stringify({ route: routeName, weights }) });
  const text = await res.text();
  out.textContent = res.ok ? `done: ${JSON.parse(text).proxiesUpdated} proxies updated` : `refused: ${text}`;
}

document.addEventListener("click", (ev) => {
  const b = ev.target.closest("button[data-apply]");
  if (b) applyShift(b.dataset.apply, b.closest("section"));
});

let source = null;
// The window, and the Service whose page is open: only its series is sent.
const query = () => {
  const { view, arg } = route();
  return `window=${$("#window").value}` + (view === "service" ? `&service=${encodeURIComponent(arg)}` : "");
};
let asked = "";
function connect() {
  if (source) source.close();
  source = new EventSource(`/api/events?${query()}`);
  source.onmessage = (m) => {
    state = JSON.parse(m.data);
    $("#live").className = "dot live";
    $("#live").textContent = "live";
    // Keep an input the operator is typing in.
    if (!document.activeElement || document.activeElement.tagName !== "INPUT") render();
  };
  source.onerror = () => { $("#live").className = "dot down"; $("#live").textContent = "reconnecting"; };
}
$("#window").addEventListener("change", load);
// A new Service page asks for its series: fetched at once, then pushed.
window.addEventListener("hashchange", () => {
  render();
  if (query() !== asked) load();
});
function load() {
  asked = query();
  fetch(`/api/state?${asked}`).then((r) => r.json()).then((s) => { state = s; render(); });
  connect();
}
load();
