// xray-pipeline dashboard: a static page over the sidecar's public API (no build step).
"use strict";

const TOKEN_KEY = "xray_api_token";
const RANGES = { "1h": 3600e3, "24h": 86400e3, "7d": 7 * 86400e3, "30d": 30 * 86400e3 };
const REFRESH_MS = 5000;
const PAGE_SIZE = 50;

const $ = (id) => document.getElementById(id);
const state = {
  cursors: [null], // cursor of each page visited, newest page first
  nextCursor: null, // the shown page's next_cursor (the Older button)
  filters: {},
  view: "overview",
  email: null,
  charts: {},
};

// ------------------------------------------------------------------ API access

class ApiError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

// One prompt at a time: the page's concurrent requests that met a 401 wait for the same answer.
let tokenPrompt = null;

function askToken() {
  if (tokenPrompt) return tokenPrompt;
  const dialog = $("token-dialog");
  tokenPrompt = new Promise((resolve) => {
    const form = $("token-form");
    const done = (event) => {
      event.preventDefault();
      const value = $("token-input").value.trim();
      if (!value) return;
      sessionStorage.setItem(TOKEN_KEY, value);
      form.removeEventListener("submit", done);
      dialog.close();
      tokenPrompt = null;
      resolve();
    };
    form.addEventListener("submit", done);
    if (!dialog.open) dialog.showModal();
    $("token-input").focus();
  });
  return tokenPrompt;
}

async function api(path, params = {}) {
  const query = new URLSearchParams();
  for (const [key, value] of Object.entries(params)) {
    if (value !== null && value !== undefined && value !== "") query.set(key, value);
  }
  const url = query.toString() ? `${path}?${query}` : path;
  for (let attempt = 0; attempt < 3; attempt++) {
    const headers = { Accept: "application/json" };
    const token = sessionStorage.getItem(TOKEN_KEY);
    if (token) headers.Authorization = `Bearer ${token}`;
    const response = await fetch(url, { headers });
    if (response.status === 401) {
      // A request sent with an older token must not throw away the one typed since.
      if (sessionStorage.getItem(TOKEN_KEY) === token) sessionStorage.removeItem(TOKEN_KEY);
      if (!sessionStorage.getItem(TOKEN_KEY)) await askToken();
      continue;
    }
    const body = await response.json().catch(() => ({}));
    if (!response.ok) {
      let message = body.detail;
      if (Array.isArray(message)) message = message.map((d) => d.msg).join("; ");
      throw new ApiError(response.status, message || `${response.status} ${response.statusText}`);
    }
    return body;
  }
  throw new ApiError(401, "no valid API token");
}

function showError(error) {
  const banner = $("banner");
  if (!error) {
    banner.hidden = true;
    banner.textContent = "";
    return;
  }
  banner.hidden = false;
  banner.textContent =
    error.status === 503
      ? `The database is unavailable (${error.message}); the page retries by itself.`
      : `Request failed: ${error.message}`;
}

// ------------------------------------------------------------------ formatting

const number = new Intl.NumberFormat();

function pad(n) {
  return String(n).padStart(2, "0");
}

function formatTime(value) {
  if (!value) return "–";
  const d = new Date(value);
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`;
}

function formatLag(seconds) {
  if (seconds === null || seconds === undefined) return "no data";
  const s = Math.max(0, seconds);
  if (s < 90) return `${Math.round(s)} s`;
  if (s < 5400) return `${Math.round(s / 60)} min`;
  if (s < 172800) return `${Math.round(s / 3600)} h`;
  return `${Math.round(s / 86400)} d`;
}

function endpoint(item) {
  if (!item.dest_host && !item.dest_url) return "–";
  if (!item.dest_host) return item.dest_url;
  const host = item.dest_host.includes(":") ? `[${item.dest_host}]` : item.dest_host;
  return item.dest_port !== null ? `${host}:${item.dest_port}` : host;
}

function el(tag, text, className) {
  const node = document.createElement(tag);
  if (text !== undefined && text !== null) node.textContent = text;
  if (className) node.className = className;
  return node;
}

function userLink(email) {
  if (!email) return el("span", "–", "muted");
  const link = el("a", email);
  link.href = `#/user/${encodeURIComponent(email)}`;
  return link;
}

// ------------------------------------------------------------------ time range

function rangeParams() {
  const range = $("range").value;
  if (range === "all") return {};
  return { from: new Date(Date.now() - RANGES[range]).toISOString() };
}

// the chosen node narrows the cards, the chart and the connections (empty: the whole fleet)
function nodeParams() {
  const node = $("node").value;
  return node ? { node } : {};
}

function formatBytes(n) {
  if (n < 1024) return `${n} B`;
  const units = ["KiB", "MiB", "GiB", "TiB"];
  let value = n / 1024;
  let unit = 0;
  while (value >= 1024 && unit < units.length - 1) {
    value /= 1024;
    unit++;
  }
  return `${value.toFixed(value < 10 ? 1 : 0)} ${units[unit]}`;
}

function bucketFor() {
  const chosen = $("bucket").value;
  if (chosen !== "auto") return chosen;
  const range = $("range").value;
  return range === "all" || range === "30d" ? "day" : "hour";
}

// ------------------------------------------------------------------ charts

function drawChart(key, container, points) {
  const xs = points.map((p) => new Date(p.t).getTime() / 1000);
  const data = [xs, points.map((p) => p.connections), points.map((p) => p.rejected)];
  const width = Math.max(container.clientWidth, 280);
  const chart = state.charts[key];
  // one bucket alone (the last hour, a new log) gets an hour each side, not years
  const lo = xs.length ? xs[0] : Date.now() / 1000 - 3600;
  const hi = xs.length ? xs[xs.length - 1] : Date.now() / 1000;
  const xRange = lo === hi ? { min: lo - 3600, max: hi + 3600 } : { min: lo, max: hi };
  if (chart && chart.root.parentNode === container) {
    chart.setData(data);
    chart.setSize({ width, height: 240 });
    chart.setScale("x", xRange);
    return;
  }
  container.replaceChildren();
  state.charts[key] = new uPlot(
    {
      width,
      height: 240,
      series: [
        {},
        { label: "connections", stroke: "#2563eb", fill: "rgba(37,99,235,0.12)", width: 2 },
        { label: "rejected", stroke: "#dc2626", width: 1.5 },
      ],
      axes: [{}, { size: 80 }],
      scales: { x: { time: true } },
    },
    data,
    container,
  );
  state.charts[key].setScale("x", xRange);
}

window.addEventListener("resize", () => {
  for (const chart of Object.values(state.charts)) {
    const parent = chart.root.parentNode;
    if (parent && parent.clientWidth) chart.setSize({ width: parent.clientWidth, height: 240 });
  }
});

function drawBars(list, counts, { keepOrder = false } = {}) {
  const entries = Object.entries(counts);
  if (!keepOrder) entries.sort((a, b) => b[1] - a[1]);
  const max = Math.max(0, ...entries.map((e) => e[1]));
  list.replaceChildren();
  if (!entries.length) {
    list.append(el("li", "no data", "muted"));
    return;
  }
  for (const [name, n] of entries) {
    const item = el("li");
    const label = el("span", name, "bar-label");
    const bar = el("span", null, "bar");
    bar.style.width = `${max ? Math.max((n / max) * 100, 1) : 0}%`;
    bar.setAttribute("aria-hidden", "true");
    item.append(label, el("span", number.format(n), "bar-value"), bar);
    list.append(item);
  }
}

// the top countries or networks of the stats, then what is beyond the top and what has no
// place, in that order (never silently capped)
function drawPlaces(list, note, part, label, geoip) {
  const counts = {};
  for (const item of part.items) counts[label(item)] = item.connections;
  if (part.other) counts[`other (${number.format(part.distinct - part.items.length)} more)`] = part.other;
  if (part.unknown) counts["unknown"] = part.unknown;
  drawBars(list, counts, { keepOrder: true });
  if (!geoip) note.textContent = "No GeoIP database is configured ([geoip] in config.ini).";
  else if (geoip.includes("synthetic")) note.textContent = "Synthetic database (demo): made-up places.";
  else note.textContent = "";
}

function networkName(item) {
  return item.org ? `AS${item.asn} ${item.org}` : `AS${item.asn}`;
}

// ------------------------------------------------------------------ overview

function drawNodes(nodes) {
  $("nodes-panel").hidden = !nodes.length;
  $("node-label").hidden = !nodes.length;
  const select = $("node");
  const names = nodes.map((n) => n.name);
  const shown = [...select.options].slice(1).map((o) => o.value);
  if (names.join("\n") !== shown.join("\n")) {
    const chosen = select.value;
    select.replaceChildren(select.options[0], ...names.map((name) => el("option", name)));
    select.value = names.includes(chosen) ? chosen : "";
  }
  $("nodes-table").tBodies[0].replaceChildren(
    ...nodes.map((n) => {
      const row = el("tr");
      const pick = el("button", n.name, "link");
      pick.type = "button";
      pick.title = `show ${n.name} only`;
      pick.addEventListener("click", () => {
        select.value = n.name;
        select.dispatchEvent(new Event("change"));
      });
      const name = el("td");
      name.append(pick);
      row.append(
        name,
        el("td", n.last_contact ? formatTime(n.last_contact) : "never", "nowrap"),
        el("td", formatLag(n.lag_seconds)),
        el("td", number.format(n.lines_today), "num"),
        el("td", formatBytes(n.bytes_waiting), "num"),
        el("td", n.shipper_version || "–", "muted"),
      );
      return row;
    }),
  );
}

const RULE_NAMES = { ip_limit: "IP limit", tagged: "tagged traffic", rejected: "rejected storm" };

function drawIncidents(page, open) {
  $("incidents-open").textContent = `(${number.format(open.total)} open)`;
  $("incidents-empty").hidden = page.items.length > 0;
  $("incidents-table").hidden = page.items.length === 0;
  $("incidents-table").tBodies[0].replaceChildren(
    ...page.items.map((i) => {
      const row = el("tr", null, i.state === "open" ? "open" : "");
      const who = el("td");
      who.append(i.rule === "rejected" ? el("span", i.subject) : userLink(i.subject));
      row.append(
        el("td", `#${i.id}`, "muted"),
        el("td", RULE_NAMES[i.rule] || i.rule),
        who,
        el("td", `${number.format(i.peak)} / ${number.format(i.limit)}`, "num"),
        el("td", i.nodes.join(", ") || "–"),
        el("td", formatTime(i.opened_at), "nowrap"),
        el("td", i.state + (i.acknowledged_at ? " (acknowledged)" : "")),
      );
      return row;
    }),
  );
}

async function loadSummary() {
  const range = { ...rangeParams(), ...nodeParams() };
  const [stats, series, fresh, nodes, incidents, open] = await Promise.all([
    api("/api/logs/stats", range),
    api("/api/timeseries", { ...range, bucket: bucketFor() }),
    api("/api/freshness"),
    api("/api/nodes"),
    api("/api/incidents", { ...nodeParams(), limit: 10 }),
    api("/api/incidents", { ...nodeParams(), open: true, limit: 1 }),
  ]);
  drawNodes(nodes);
  drawIncidents(incidents, open);
  const node = nodes.find((n) => n.name === $("node").value);
  if (node) Object.assign(fresh, { lag_seconds: node.lag_seconds, newest_row: node.newest_line });
  $("card-connections").textContent = number.format(stats.connections);
  $("card-users").textContent = number.format(stats.unique_users);
  $("card-accepted").textContent = number.format(stats.accepted);
  $("card-rejected").textContent = number.format(stats.rejected);
  $("card-lag").textContent = formatLag(fresh.lag_seconds);
  $("card-lag").title = fresh.newest_row ? `newest row: ${formatTime(fresh.newest_row)}` : "";
  drawBars($("dist-protocols"), stats.protocols);
  drawBars($("dist-inbound"), stats.inbound_tags);
  drawBars($("dist-outbound"), stats.outbound_tags);
  drawPlaces($("dist-countries"), $("countries-note"), stats.countries, (c) => c.country, stats.geoip);
  drawPlaces($("dist-networks"), $("networks-note"), stats.networks, networkName, stats.geoip);
  $("chart-empty").hidden = series.points.length > 0;
  drawChart("overview", $("chart"), series.points);
}

async function loadLogs() {
  const cursor = state.cursors[state.cursors.length - 1];
  const page = await api("/api/logs", {
    ...rangeParams(),
    ...nodeParams(),
    ...state.filters,
    limit: PAGE_SIZE,
    cursor,
  });
  const body = $("logs-table").tBodies[0];
  const rows = page.items.map((item) => {
    const row = el("tr");
    row.append(
      el("td", formatTime(item.ts), "nowrap"),
      el("td"),
      el("td", item.src_port !== null ? `${item.src_ip}:${item.src_port}` : item.src_ip || "–"),
      el("td", endpoint(item)),
      el("td", item.dest_network || item.src_network || "–"),
      el("td", [item.inbound_tag, item.outbound_tag].filter(Boolean).join(" → ") || "–"),
      el("td", item.status, `status ${item.status}`),
    );
    row.children[1].append(userLink(item.email));
    if (item.reason) row.children[6].title = item.reason;
    return row;
  });
  body.replaceChildren(...rows);
  if (!rows.length) {
    const empty = el("tr");
    const cell = el("td", "No connections match.", "muted");
    cell.colSpan = 7;
    empty.append(cell);
    body.append(empty);
  }
  const first = (state.cursors.length - 1) * PAGE_SIZE;
  const total = page.total_is_estimate ? `about ${number.format(page.total)}` : number.format(page.total);
  $("page-info").textContent = rows.length
    ? `${number.format(first + 1)}–${number.format(first + rows.length)} of ${total}`
    : `0 of ${total}`;
  $("newer").disabled = state.cursors.length === 1;
  $("older").disabled = !page.next_cursor;
  state.nextCursor = page.next_cursor;
}

function readFilters() {
  const data = new FormData($("filters"));
  const filters = {};
  for (const [key, value] of data.entries()) {
    if (String(value).trim()) filters[key] = String(value).trim();
  }
  return filters;
}

// ------------------------------------------------------------------ user page

async function loadUser() {
  const email = state.email;
  const range = $("range").value === "all" ? { from: "1970-01-01T00:00:00Z" } : rangeParams();
  const path = `/api/users/${encodeURIComponent(email)}`;
  const [detail, series, incidents] = await Promise.all([
    api(path, range),
    api("/api/timeseries", { ...rangeParams(), bucket: bucketFor(), user: email }),
    api("/api/incidents", { user: email, open: true }),
  ]);
  $("user-title").textContent = email;
  const badge = $("u-incidents");
  badge.hidden = incidents.total === 0;
  badge.textContent = incidents.items
    .map((i) => `${RULE_NAMES[i.rule] || i.rule}: ${i.peak} over a limit of ${i.limit} (#${i.id})`)
    .join("; ");
  if (incidents.total) badge.textContent = `Open incident: ${badge.textContent}`;
  $("u-connections").textContent = number.format(detail.connections);
  $("u-first").textContent = formatTime(detail.first_seen);
  $("u-last").textContent = formatTime(detail.last_seen);
  $("u-ips").textContent = number.format(detail.source_ips.length);
  $("u-countries").textContent = detail.countries.map((c) => c.country).join(" ") || "–";
  $("u-networks").textContent = number.format(detail.networks.length);
  drawChart("user", $("u-chart"), series.points);

  const ips = detail.source_ips;
  const lo = Math.min(...ips.map((i) => Date.parse(i.first_seen)));
  const hi = Math.max(...ips.map((i) => Date.parse(i.last_seen)), lo + 60e3);
  $("u-ip-table").tBodies[0].replaceChildren(
    ...ips.map((ip) => {
      const row = el("tr");
      const span = el("td", null, "timeline-col");
      const track = el("div", null, "timeline");
      const bar = el("span");
      const start = Date.parse(ip.first_seen);
      const end = Date.parse(ip.last_seen);
      bar.style.left = `${((start - lo) / (hi - lo)) * 100}%`;
      bar.style.width = `${Math.max(((end - start) / (hi - lo)) * 100, 0.8)}%`;
      track.title = `${formatTime(ip.first_seen)} – ${formatTime(ip.last_seen)}`;
      track.append(bar);
      span.append(track);
      row.append(
        el("td", ip.ip || "–", "nowrap"),
        el("td", ip.country || "–"),
        el("td", ip.asn !== null ? networkName({ asn: ip.asn, org: ip.as_org }) : "–"),
        el("td", number.format(ip.connections), "num"),
        el("td", formatTime(ip.first_seen), "nowrap"),
        el("td", formatTime(ip.last_seen), "nowrap"),
        span,
      );
      return row;
    }),
  );
  $("u-dest-table").tBodies[0].replaceChildren(
    ...detail.top_destinations.map((d) => {
      const row = el("tr");
      row.append(el("td", endpoint({ dest_host: d.host, dest_port: d.port })), el("td", number.format(d.connections), "num"));
      return row;
    }),
  );
  $("u-sess-table").tBodies[0].replaceChildren(
    ...detail.sessions.map((s) => {
      const row = el("tr");
      row.append(el("td", formatTime(s.start), "nowrap"), el("td", formatTime(s.end), "nowrap"), el("td", number.format(s.connections), "num"));
      return row;
    }),
  );
  await loadWindow();
}

async function loadWindow() {
  const minutes = Number($("window-minutes").value) || 60;
  const signal = await api(`/api/users/${encodeURIComponent(state.email)}/ips`, { window: minutes });
  const plural = (n, word) => `${n} ${word}${n === 1 ? "" : "s"}`;
  $("window-summary").textContent =
    `${plural(signal.distinct_ips, "distinct IP")} in the last ${minutes} minutes` +
    (signal.distinct_countries ? `, from ${plural(signal.distinct_countries, "country").replace("countrys", "countries")} and ${plural(signal.distinct_networks, "network")}` : "") +
    (signal.distinct_ips > 1 ? " (more than one: a shared account?)" : "");
  $("window-ips").replaceChildren(
    ...signal.ips.map((ip) => {
      const place = [ip.country, ip.asn !== null ? networkName({ asn: ip.asn, org: ip.as_org }) : null].filter(Boolean).join(", ");
      return el("li", `${ip.ip}${place ? ` (${place})` : ""} · ${number.format(ip.connections)} connections · last ${formatTime(ip.last_seen)}`);
    }),
  );
}

// ------------------------------------------------------------------ wiring

// tasks run one after another (a click during a live refresh waits its turn, never lost)
let chain = Promise.resolve();
let pending = 0;

function run(task) {
  pending++;
  document.body.setAttribute("aria-busy", "true");
  chain = chain.then(async () => {
    try {
      await task();
      showError(null);
    } catch (error) {
      showError(error);
    } finally {
      pending--;
      // tests and scripts can wait for this count to grow
      document.body.dataset.loads = String(Number(document.body.dataset.loads || 0) + 1);
      if (!pending) document.body.removeAttribute("aria-busy");
    }
  });
  return chain;
}

function refreshOverview() {
  return run(() => Promise.all([loadSummary(), loadLogs()]));
}

function route() {
  const match = location.hash.match(/^#\/user\/(.+)$/);
  state.view = match ? "user" : "overview";
  state.email = match ? decodeURIComponent(match[1]) : null;
  $("overview-view").hidden = state.view !== "overview";
  $("user-view").hidden = state.view !== "user";
  if (state.view === "user") {
    run(loadUser).then(() => $("user-title").focus());
  } else {
    refreshOverview();
  }
}

function liveTick() {
  if (!$("live").checked || document.hidden || pending) return;
  if (state.view === "user") {
    run(loadWindow);
    return;
  }
  // the page the user looks at is re-read with its own cursor: older pages stay in place,
  // the first page shows the newest rows; a focused link in the table is left alone
  const table = $("logs-table");
  if (table.contains(document.activeElement)) return run(loadSummary);
  refreshOverview();
}

document.addEventListener("DOMContentLoaded", () => {
  $("user-title").tabIndex = -1;
  $("range").addEventListener("change", () => {
    state.cursors = [null];
    route();
  });
  $("node").addEventListener("change", () => {
    state.cursors = [null];
    if (state.view === "overview") refreshOverview();
  });
  $("bucket").addEventListener("change", () => (state.view === "user" ? run(loadUser) : run(loadSummary)));
  $("range-form").addEventListener("submit", (event) => event.preventDefault());
  $("filters").addEventListener("submit", (event) => {
    event.preventDefault();
    state.filters = readFilters();
    state.cursors = [null];
    run(loadLogs);
  });
  $("filters").addEventListener("reset", () => {
    state.filters = {};
    state.cursors = [null];
    setTimeout(() => run(loadLogs));
  });
  $("older").addEventListener("click", () => {
    if (!state.nextCursor) return;
    state.cursors.push(state.nextCursor);
    run(loadLogs);
  });
  $("newer").addEventListener("click", () => {
    if (state.cursors.length > 1) state.cursors.pop();
    run(loadLogs);
  });
  $("window-form").addEventListener("submit", (event) => {
    event.preventDefault();
    run(loadWindow);
  });
  window.addEventListener("hashchange", route);
  setInterval(liveTick, REFRESH_MS);
  route();
});
