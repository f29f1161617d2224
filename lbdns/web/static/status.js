// The lbdns status page: polls /v1/status and redraws every zone, farm and host.
// Plain script, no build step. The read token (when the server has tokens) comes from
// #token=... in the address or the form, and is kept for this tab only.
"use strict";

const POLL_MS = 1000;
const POINTS = 120; // seconds of history drawn per chart, at most
const MIN_SPAN = 30; // seconds a chart spans at least
const SHARE_SMOOTHING = 5; // seconds of answers behind each point of the share chart
const PALETTE = ["#2563eb", "#db2777", "#16a34a", "#ea580c", "#7c3aed", "#0891b2",
                 "#ca8a04", "#dc2626", "#4b5563", "#65a30d"];
const SVG = "http://www.w3.org/2000/svg";

let updates = 0;

function token() {
  const match = location.hash.match(/token=([^&]+)/);
  if (match) {
    sessionStorage.setItem("lbdns-token", decodeURIComponent(match[1]));
    history.replaceState(null, "", location.pathname); // keep it out of the visible address
  }
  return sessionStorage.getItem("lbdns-token");
}

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (key === "class") node.className = value;
    else if (key === "style") node.style.cssText = value;
    else node.setAttribute(key, value);
  }
  for (const child of children) {
    if (child === null || child === undefined) continue;
    node.append(child instanceof Node ? child : String(child));
  }
  return node;
}

function svg(tag, attrs) {
  const node = document.createElementNS(SVG, tag);
  for (const [key, value] of Object.entries(attrs)) node.setAttribute(key, value);
  return node;
}

function fmt(value, digits = 2) {
  if (value === null || value === undefined) return "–";
  return Number(value).toFixed(digits);
}

function pct(value) {
  return value === null || value === undefined ? "–" : `${(value * 100).toFixed(1)}%`;
}

function age(seconds) {
  if (seconds === null || seconds === undefined) return "never";
  return seconds < 60 ? `${seconds.toFixed(1)} s` : `${Math.round(seconds / 60)} min`;
}

function clock(epochSeconds) {
  return new Date(epochSeconds * 1000).toLocaleTimeString([], { hour12: false });
}

// One line chart: a polyline per host over the last POINTS samples (null values break it),
// with its values on the y axis (0, half, top) and the time of day on the x axis. The labels
// are HTML around the SVG, which is stretched to its box and would stretch text too.
function chart(title, series, colours, yMax, yLabel, times) {
  const width = 300, height = 100;
  const length = times.length;
  // Span the samples there are (at least MIN_SPAN s) so a young server's lines are not squeezed
  // into the right edge.
  const span = Math.min(POINTS, Math.max(MIN_SPAN, length));
  const box = svg("svg", { viewBox: `0 0 ${width} ${height}`, preserveAspectRatio: "none",
                           role: "img", "aria-label": title });
  for (const frac of [0.25, 0.5, 0.75]) {
    box.append(svg("line", { x1: 0, x2: width, y1: height * frac, y2: height * frac,
                             stroke: "#e5e7eb", "stroke-width": 0.5 }));
  }
  for (const [name, values] of Object.entries(series)) {
    const offset = span - values.length;
    let points = [];
    const flush = () => {
      if (points.length > 1) {
        box.append(svg("polyline", { points: points.join(" "), fill: "none",
                                     stroke: colours[name], "stroke-width": 1.5,
                                     "vector-effect": "non-scaling-stroke" }));
      }
      points = [];
    };
    values.forEach((value, i) => {
      if (value === null || value === undefined) return flush();
      if (offset + i < 0) return;
      const x = ((offset + i) / (span - 1)) * width;
      const y = height - Math.min(value / yMax, 1) * (height - 4) - 2;
      points.push(`${x.toFixed(1)},${y.toFixed(1)}`);
    });
    flush();
  }
  // The x axis: the time at the left edge (span - 1 samples, one a second, before the last),
  // in the middle and at the last sample.
  const last = length ? times[length - 1] : Date.now() / 1000;
  const xTicks = [last - (span - 1), last - (span - 1) / 2, last].map(clock);
  const yAxis = el("div", { class: "y-axis" },
    el("span", {}, yLabel(yMax)), el("span", {}, yLabel(yMax / 2)), el("span", {}, yLabel(0)));
  const xAxis = el("div", { class: "x-axis" }, ...xTicks.map((t) => el("span", {}, t)));
  return el("div", { class: "chart" },
    el("div", { class: "title" }, `${title} · last ${span} s`),
    el("div", { class: "plot" }, yAxis, box), xAxis);
}

// What a draining host's drain waits for, as `lbdns hosts drain --wait` prints it.
function drainLine(host) {
  const drain = host.drain;
  const running = `${drain.running_for.toFixed(1)} s`;
  if (drain.done) return `${host.name}: drained after ${running}; it can be removed`;
  return `${host.name}: draining for ${running} · ${drain.waiting_for.join(" · ")}`;
}

// The servers' health checks of a host: "up", "down 2/3" (servers seeing it down / probing),
// and why a host that is not up is out ("agent" or "check").
function checkText(host) {
  const check = host.check;
  let text = "–";
  if (check) {
    text = check.verdict;
    if (check.servers > 1 || check.down) text += ` ${check.down}/${check.servers}`;
  }
  if (host.reason && host.state !== "up" && host.reason !== "admin") text += ` (${host.reason})`;
  return text;
}

function farmCard(farm) {
  const colours = {};
  farm.hosts.forEach((host, i) => { colours[host.name] = PALETTE[i % PALETTE.length]; });
  const rows = farm.hosts.map((host) => el("tr", { "data-host": host.name, "data-state": host.state },
    el("td", {}, el("span", { class: "swatch", style: `background:${colours[host.name]}` }), host.name),
    el("td", {}, el("span", { class: `state ${host.state}` }, host.state)),
    el("td", { class: "num" }, fmt(host.score, 3)),
    el("td", { class: "num" }, host.connections ?? "–"),
    el("td", { class: "num" }, host.capacity),
    el("td", { class: "num" }, age(host.report_age)),
    el("td", { class: "num" }, pct(host.share),
       el("span", { class: "bar", style: `width:${Math.round((host.share || 0) * 60)}px` })),
    el("td", { class: "num" }, host.answers),
    el("td", { class: "check" }, checkText(host)),
    el("td", {}, host.addresses.join(" "))));
  const table = el("table", {},
    el("thead", {}, el("tr", {}, ...["host", "state", "score", "connections", "capacity",
      "report age", "answer share (1 min)", "answers", "check", "addresses"].map((h) => el("th", {}, h)))),
    el("tbody", {}, ...rows));
  const card = el("section", { class: "farm", "data-farm": farm.name },
    el("h3", {}, farm.name),
    el("div", { class: "facts" },
      el("span", {}, "policy ", el("b", {}, farm.policy)),
      el("span", { title: "load of the reporting hosts / capacity of the up hosts" },
         "utilisation ", el("b", { class: "utilisation" }, pct(farm.utilisation))),
      el("span", { title: "hosts of the mean capacity that bring utilisation to scale_target" },
         "hosts needed ", el("b", {}, farm.scale ? (farm.scale.hosts_needed ?? "–") : "–")),
      el("span", {}, "balance (peak/mean) ", el("b", {}, fmt(farm.balance))),
      el("span", {}, "up ", el("b", {}, farm.up), " · stale ", el("b", {}, farm.stale),
         " · down ", el("b", {}, farm.down)),
      el("span", {}, "TTL ", el("b", {}, `${farm.ttl} s`)),
      el("span", {}, "all unhealthy: ", el("b", {}, farm.all_unhealthy))),
    table);
  const drains = farm.hosts.filter((host) => host.drain);
  if (drains.length) {
    card.append(el("ul", { class: "drains" },
      ...drains.map((host) => el("li", { "data-drain": host.name }, drainLine(host)))));
  }
  if (farm.history) {
    const load = farm.history.load;
    let peak = 0;
    for (const values of Object.values(load)) {
      for (const v of values) if (v !== null && v > peak) peak = v;
    }
    const yMax = peak > 0 ? peak * 1.1 : 1;
    const share = {};
    const names = Object.keys(farm.history.answers);
    const times = farm.history.times;
    const length = times.length;
    for (const name of names) share[name] = [];
    // Over a trailing window of SHARE_SMOOTHING seconds: a farm answered a few times a second
    // would otherwise jump between 0 and 100 % from one second to the next.
    const answers = farm.history.answers;
    const windowed = (name, i) => {
      let sum = 0;
      for (let j = Math.max(0, i - SHARE_SMOOTHING + 1); j <= i; j++) sum += answers[name][j] || 0;
      return sum;
    };
    for (let i = 0; i < length; i++) {
      const total = names.reduce((sum, n) => sum + windowed(n, i), 0);
      for (const name of names) share[name].push(total ? windowed(name, i) / total : null);
    }
    card.append(el("div", { class: "charts" },
      chart("load score per host", load, colours, yMax, (v) => fmt(v, v < 10 ? 2 : 0), times),
      chart(`answer share per host (${SHARE_SMOOTHING} s average)`, share, colours, 1,
            (v) => `${Math.round(v * 100)}%`, times)));
  }
  return card;
}

function render(data) {
  const zones = document.getElementById("zones");
  const parts = data.zones.map((zone) => el("div", { class: "zone", "data-zone": zone.origin },
    el("h2", {}, zone.origin, " ", el("small", {}, `serial ${zone.serial}`)),
    ...(zone.farms.length ? zone.farms.map(farmCard) : [el("p", {}, "no farms")])));
  zones.replaceChildren(...parts);
  const dns = data.dns;
  document.getElementById("summary").textContent =
    `${data.zones.length} zone(s) · store ${data.store.kind}` +
    `${data.store.healthy ? "" : " (UNHEALTHY)"} · ${dns.udp_queries} UDP / ` +
    `${dns.tcp_queries} TCP queries · up ${Math.round(data.uptime)} s`;
  updates += 1;
  const updated = document.getElementById("updated");
  updated.dataset.updates = String(updates);
  updated.textContent = `updated ${new Date().toLocaleTimeString()}`;
}

function showError(text) {
  const box = document.getElementById("error");
  box.textContent = text;
  box.hidden = !text;
}

async function poll() {
  const headers = {};
  const secret = token();
  if (secret) headers.Authorization = `Bearer ${secret}`;
  try {
    const response = await fetch(`v1/status?history=${POINTS}`, { headers, cache: "no-store" });
    const body = await response.json();
    if (!response.ok) {
      if (response.status === 401) document.getElementById("login").hidden = false;
      showError(`${response.status}: ${body.error || response.statusText}`);
    } else {
      showError("");
      document.getElementById("login").hidden = true;
      render(body);
    }
  } catch (error) {
    showError(`cannot reach the server: ${error}`);
  }
  setTimeout(poll, POLL_MS);
}

document.getElementById("login").addEventListener("submit", (event) => {
  event.preventDefault();
  sessionStorage.setItem("lbdns-token", document.getElementById("token").value);
  showError("");
});

poll();
