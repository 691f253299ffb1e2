// SAT Audio's live view: loads api/state, then follows api/events (server-sent events).
// Every URL is relative, so the page works under any prefix (Home Assistant's ingress).
"use strict";

const METER_MIN_DB = -90;
const state = { info: null, sources: new Map(), episodes: [] };

function el(tag, cls, text) {
  const node = document.createElement(tag);
  if (cls) node.className = cls;
  if (text !== undefined) node.textContent = text;
  return node;
}

function fmt(x, digits) {
  return x === null || x === undefined ? "–" : x.toFixed(digits);
}

function clock(seconds) {
  return new Date(seconds * 1000).toLocaleTimeString();
}

function setConnection(text, cls) {
  const badge = document.getElementById("connection");
  badge.textContent = text;
  badge.className = "badge " + cls;
}

// Episodes of one source's event, shaded behind its chart.
function shadeEpisodes(source, key) {
  return {
    hooks: {
      drawClear: [
        (u) => {
          const now = u.scales.x.max;
          const ctx = u.ctx;
          ctx.save();
          ctx.fillStyle = getComputedStyle(document.documentElement).getPropertyValue("--episode");
          for (const ep of state.episodes) {
            if (ep.source !== source || ep.event !== key) continue;
            const x0 = u.valToPos(ep.start_t, "x", true);
            const x1 = u.valToPos(ep.end_t ?? now, "x", true);
            const left = Math.max(x0, u.bbox.left);
            const right = Math.min(x1, u.bbox.left + u.bbox.width);
            if (right > left) ctx.fillRect(left, u.bbox.top, right - left, u.bbox.height);
          }
          ctx.restore();
        },
      ],
    },
  };
}

function makeChart(container, source, ev) {
  const loud = ev.kind === "loud";
  const width = Math.max(200, container.clientWidth);
  const opts = {
    width,
    height: 130,
    legend: { show: false },
    cursor: { show: false },
    scales: { x: { time: true }, y: { range: loud ? [-100, 0] : [0, 1] } },
    axes: [
      { stroke: "#888", size: 30 },
      { stroke: "#888", size: 40, splits: () => (loud ? [-100, -50, 0] : [0, 0.5, 1]) },
    ],
    series: [
      {},
      { label: "score", stroke: "#0b7285", width: 1.5, points: { show: false } },
      { label: "on", stroke: "#c92a2a", dash: [6, 4], width: 1, points: { show: false } },
      { label: "off", stroke: "#e8890c", dash: [2, 4], width: 1, points: { show: false } },
    ],
    plugins: [shadeEpisodes(source, ev.key)],
  };
  const chart = new uPlot(opts, [[], [], [], []], container);
  new ResizeObserver(() => {
    chart.setSize({ width: Math.max(200, container.clientWidth), height: 130 });
  }).observe(container);
  return chart;
}

function buildSource(src) {
  const card = el("section", "card source");
  card.dataset.source = src.name;
  const head = el("div", "event-head");
  head.append(el("h2", null, src.name));
  const health = el("span", "badge", "");
  head.append(health);
  card.append(head);

  const top = el("div", "source-top");
  const levelBox = el("div");
  levelBox.append(el("h3", null, "Level"));
  const meter = el("div", "meter");
  const bar = el("div", "bar");
  meter.append(bar);
  const gate = state.info.min_level_dbfs;
  if (gate !== null && gate !== undefined) {
    const mark = el("div", "gate");
    mark.style.left = `${meterPercent(gate)}%`;
    mark.title = `volume gate ${gate} dBFS`;
    meter.append(mark);
  }
  const levelText = el("div", "level-text", "– dBFS");
  levelBox.append(meter, levelText);
  const topBox = el("div");
  topBox.append(el("h3", null, "Top 10 now"));
  const list = el("ol", "top");
  topBox.append(list);
  top.append(levelBox, topBox);
  card.append(top);

  const events = new Map();
  for (const ev of state.info.events) {
    const box = el("div", "event");
    box.dataset.event = ev.key;
    const evHead = el("div", "event-head");
    evHead.append(el("h3", null, ev.name));
    const words = el("span", "state", "waiting for audio");
    const score = el("span", "score", "");
    const unit = ev.kind === "loud" ? " dBFS" : "";
    const limits = el("span", "quiet", `on ${ev.on}${unit} · off ${ev.off}${unit}`);
    evHead.append(words, score, limits);
    const chartBox = el("div", "chart");
    box.append(evHead, chartBox);
    card.append(box);
    events.set(ev.key, { ev, words, score, chartBox, chart: null });
  }
  document.getElementById("sources").append(card);
  return { card, health, bar, levelText, list, events, t: [], scores: new Map() };
}

function meterPercent(db) {
  const clamped = Math.min(0, Math.max(METER_MIN_DB, db));
  return (100 * (clamped - METER_MIN_DB)) / -METER_MIN_DB;
}

function showLevel(view, db) {
  view.bar.style.width = `${db === null ? 0 : meterPercent(db)}%`;
  view.levelText.textContent = `${fmt(db, 1)} dBFS`;
}

function showTop(view, top) {
  view.list.replaceChildren(
    ...top.map(([label, score]) => {
      const li = el("li");
      const fill = el("span", "fill");
      fill.style.width = `${Math.round(100 * (score ?? 0))}%`;
      li.append(fill, el("span", "label", label), el("span", "num", fmt(score, 3)));
      return li;
    }),
  );
}

function showStates(view, states) {
  for (const [key, words] of Object.entries(states)) {
    const item = view.events.get(key);
    if (!item) continue;
    item.words.textContent = words;
    item.words.classList.toggle("on", words.startsWith("on"));
  }
}

function trim(view) {
  const oldest = (view.t.at(-1) ?? 0) - state.info.history_s;
  let n = 0;
  while (n < view.t.length && view.t[n] < oldest) n++;
  if (n) {
    view.t.splice(0, n);
    for (const arr of view.scores.values()) arr.splice(0, n);
  }
}

function redraw(view) {
  for (const item of view.events.values()) {
    if (!item.chart) item.chart = makeChart(item.chartBox, view.card.dataset.source, item.ev);
    const ys = view.scores.get(item.ev.key) ?? [];
    const on = view.t.map(() => item.ev.on);
    const off = view.t.map(() => item.ev.off);
    item.chart.setData([view.t, ys, on, off]);
  }
}

function showHealth(health) {
  if (!health) return;
  const body = document.querySelector("#health tbody");
  body.replaceChildren(
    ...health.sources.map((s) => {
      const tr = el("tr");
      tr.dataset.source = s.name;
      for (const text of [s.name, s.error ? `${s.state}: ${s.error}` : s.state, s.overflows,
        `${s.dropped_s} s`, s.reconnects]) tr.append(el("td", null, String(text)));
      const view = state.sources.get(s.name);
      if (view) {
        view.health.textContent = s.state;
        view.health.className = "badge " + (s.state === "ok" ? "live" : "down");
      }
      return tr;
    }),
  );
  const c = health.counters;
  document.getElementById("counters").textContent =
    `${c.chunks} chunks analysed, ${c.transitions} transitions` +
    (c.mqtt_dropped !== undefined ? `, ${c.mqtt_dropped} MQTT messages dropped` : "");
}

function showEpisodes() {
  const names = new Map(state.info.events.map((e) => [e.key, e.name]));
  const body = document.querySelector("#episodes tbody");
  const rows = state.episodes.slice(-20).reverse().map((ep) => {
    const tr = el("tr");
    tr.dataset.event = ep.event;
    const length = ep.end_t === null ? "ongoing" : `${(ep.end_t - ep.start_t).toFixed(1)} s`;
    for (const text of [clock(ep.start_t), ep.source, names.get(ep.event) ?? ep.event,
      ep.label ?? "", length, fmt(ep.peak, 2)]) tr.append(el("td", null, text));
    return tr;
  });
  body.replaceChildren(...rows);
  document.getElementById("no-episodes").hidden = rows.length > 0;
}

function onEpisode(ep) {
  const i = state.episodes.findIndex((e) => e.id === ep.id);
  if (i >= 0) state.episodes[i] = ep;
  else state.episodes.push(ep);
  if (state.episodes.length > 50) state.episodes.splice(0, state.episodes.length - 50);
  showEpisodes();
  const view = state.sources.get(ep.source);
  if (view) redraw(view);
}

function onChunk(msg) {
  const view = state.sources.get(msg.source);
  if (!view) return;
  view.t.push(msg.t);
  for (const [key, score] of Object.entries(msg.scores)) {
    if (!view.scores.has(key)) view.scores.set(key, []);
    view.scores.get(key).push(score);
  }
  trim(view);
  showLevel(view, msg.level);
  showTop(view, msg.top);
  showStates(view, msg.states);
  for (const [key, score] of Object.entries(msg.scores)) {
    const item = view.events.get(key);
    if (!item) continue;
    item.score.textContent =
      item.ev.kind === "loud" ? `level ${fmt(score, 1)} dBFS` : `score ${fmt(score, 3)}`;
  }
  showHealth(msg.health);
  redraw(view);
}

async function start() {
  const response = await fetch("api/state", { cache: "no-store" });
  if (!response.ok) throw new Error(`api/state: ${response.status}`);
  const info = await response.json();
  state.info = info;
  document.getElementById("title").textContent = info.name;
  document.getElementById("meta").textContent =
    `${info.model}, ${info.chunk_s} s chunks, charts show ${Math.round(info.history_s / 60)} min`;
  state.episodes = info.episodes;
  for (const src of info.sources) {
    const view = buildSource(src);
    state.sources.set(src.name, view);
    view.t = src.t;
    for (const [key, ys] of Object.entries(src.scores)) view.scores.set(key, ys);
    showLevel(view, src.current);
    showTop(view, src.top);
    showStates(view, src.states);
    redraw(view);
  }
  if (!info.listening) {
    for (const view of state.sources.values()) {
      for (const item of view.events.values()) item.words.textContent = "paused";
    }
  }
  showEpisodes();
  showHealth(info.health);
  showTeach(info);

  const events = new EventSource("api/events");
  events.onopen = () => setConnection("live", "live");
  events.onerror = () => setConnection("reconnecting", "down");
  events.onmessage = (e) => {
    const msg = JSON.parse(e.data);
    if (msg.type === "chunk") onChunk(msg);
    else if (msg.type === "episode") onEpisode(msg);
    else if (msg.type === "states") {
      const view = state.sources.get(msg.source);
      if (view) showStates(view, msg.states);
    }
  };
}

async function calibrate(event) {
  event.preventDefault();
  const table = document.getElementById("calibrate-table");
  const snippet = document.getElementById("calibrate-yaml");
  const perDay = document.getElementById("per-day").value;
  table.hidden = false;
  table.textContent = "calibrating…";
  snippet.hidden = true;
  const response = await fetch(`api/calibrate?per_day=${encodeURIComponent(perDay)}`);
  if (!response.ok) {
    table.textContent = (await response.text()).trim();
    return;
  }
  const report = await response.json();
  table.textContent = `${(report.audio_s / 3600).toFixed(1)} h of audio\n\n${report.table}`;
  snippet.textContent = report.yaml;
  snippet.hidden = false;
}

document.getElementById("calibrate-form").addEventListener("submit", (e) => {
  calibrate(e).catch((err) => {
    document.getElementById("calibrate-table").textContent = String(err);
  });
});

function showTeach(info) {
  if (!info.teach_s) return;  // web.teach_seconds: 0
  const select = document.getElementById("teach-source");
  select.replaceChildren(...info.sources.map((src) => new Option(src.name, src.name)));
  const seconds = document.getElementById("teach-seconds");
  seconds.max = info.teach_s;
  seconds.value = Math.min(Number(seconds.value), info.teach_s);
  document.getElementById("teach").hidden = false;
}

async function teach(event) {
  event.preventDefault();
  const result = document.getElementById("teach-result");
  const button = event.target.querySelector("button");
  const name = document.getElementById("teach-name").value.trim();
  result.hidden = false;
  result.textContent = `teaching custom:${name}…`;
  button.disabled = true;
  try {
    const response = await fetch("api/teach", {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({
        source: document.getElementById("teach-source").value,
        name,
        seconds: Number(document.getElementById("teach-seconds").value),
      }),
    });
    const line = (await response.text()).trim();
    result.textContent = response.ok
      ? `${line}\nAn event uses it as custom:${name.toLowerCase()} in its labels after the listener restarts.`
      : line;
  } finally {
    button.disabled = false;
  }
}

document.getElementById("teach-form").addEventListener("submit", (e) => {
  teach(e).catch((err) => {
    document.getElementById("teach-result").textContent = String(err);
  });
});

start().catch((err) => {
  setConnection("error", "down");
  document.getElementById("meta").textContent = String(err);
});
