// ffvj's web page: every control is made from the show's "hello" (its registry and actions table);
// nothing here names a parameter. See ffvj/web/server.py for the messages.
"use strict";

const token = new URLSearchParams(location.search).get("token");
const controls = new Map();   // parameter name → {p, input, output, touched}
const pictures = new Map();   // level → the <img> showing it
let ws = null, hello = null, retry = 500, learning = false;

// -- a parameter's curve: the same arithmetic as Param.from_normalized / to_normalized (params.py) --
function clamp(p, v) {
  v = Math.min(Math.max(v, p.min), p.max);
  if (p.kind === "int" || p.kind === "enum") return Math.round(v);
  if (p.kind === "bool") return v >= 0.5 ? 1 : 0;
  return v;
}
function fromNorm(p, x) {
  x = Math.min(Math.max(x, 0), 1);
  if (p.curve === "exp" && p.min > 0) return clamp(p, p.min * Math.pow(p.max / p.min, x));
  if (p.curve === "sym") {
    const c = (p.min + p.max) / 2, h = (p.max - p.min) / 2, s = 2 * x - 1;
    return clamp(p, c + h * s * Math.abs(s));
  }
  return clamp(p, p.min + x * (p.max - p.min));
}
function toNorm(p, v) {
  v = clamp(p, v);
  if (p.max === p.min) return 0;
  if (p.curve === "exp" && p.min > 0) return Math.log(v / p.min) / Math.log(p.max / p.min);
  if (p.curve === "sym") {
    const c = (p.min + p.max) / 2, h = (p.max - p.min) / 2, s = (v - c) / h;
    return (Math.sign(s) * Math.sqrt(Math.abs(s)) + 1) / 2;
  }
  return (v - p.min) / (p.max - p.min);
}
function show(p, v) {
  if (p.kind === "enum") return p.choices[Math.round(v)] ?? String(v);
  if (p.kind === "bool") return v >= 0.5 ? "on" : "off";
  if (p.kind === "int") return String(Math.round(v)) + (p.unit ? " " + p.unit : "");
  const a = Math.abs(v), t = a >= 100 ? v.toFixed(1) : a >= 1 ? v.toFixed(3) : v.toPrecision(3);
  return t + (p.unit ? " " + p.unit : "");
}

function el(tag, attrs = {}, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === "text") e.textContent = v; else e.setAttribute(k, v);
  }
  for (const c of children) e.append(c);
  return e;
}
function send(msg) { if (ws && ws.readyState === WebSocket.OPEN) ws.send(JSON.stringify(msg)); }
function error(text) {
  const box = document.getElementById("errors");
  box.textContent = text;
  clearTimeout(error.timer);
  error.timer = setTimeout(() => { box.textContent = ""; }, 6000);
}

// -- one parameter's control --
const SLIDER_STEPS = 1000;
const pendingSets = new Map(); // name → its latest message, sent every 25 ms (≤ 40 a second a slider,
let setsTimer = null;          // whatever the screen's refresh rate; the last value is always sent)
function queueSet(msg) {
  pendingSets.set(msg.name, msg);
  if (setsTimer === null) setsTimer = setTimeout(() => {
    setsTimer = null;
    for (const m of pendingSets.values()) send(m);
    pendingSets.clear();
  }, 25);
}

function makeControl(p) {
  const id = "param-" + p.name.replace(/\W/g, "_");
  const row = el("div", {class: "control", "data-param": p.name, title: `${p.name}: ${p.doc}`});
  const label = el("label", {for: id, text: p.label});
  let input;
  if (p.kind === "enum") {
    input = el("select", {id, "aria-label": p.name});
    p.choices.forEach((c, i) => input.append(el("option", {value: i, text: c})));
    input.addEventListener("change", () => { touch(p.name); send({type: "set", name: p.name, value: Number(input.value)}); });
  } else if (p.kind === "bool") {
    input = el("input", {id, type: "checkbox", "aria-label": p.name});
    input.addEventListener("change", () => { touch(p.name); send({type: "set", name: p.name, value: input.checked ? 1 : 0}); });
  } else {
    input = el("input", {id, type: "range", min: 0, max: SLIDER_STEPS, step: 1, "aria-label": p.name});
    input.addEventListener("input", () => {
      const x = Number(input.value) / SLIDER_STEPS;
      touch(p.name);
      output.textContent = show(p, fromNorm(p, x));
      queueSet({type: "set", name: p.name, norm: x});
    });
    input.addEventListener("dblclick", () => { send({type: "set", name: p.name, value: p.default}); });
  }
  const output = el("output", {for: id});
  row.append(label, input, output);
  row.addEventListener("pointerdown", () => { if (learning) { send({type: "learn", name: p.name}); } }, true);
  controls.set(p.name, {p, input, output, touched: -Infinity});
  return row;
}
function touch(name) { controls.get(name).touched = performance.now(); }
function setValue(name, v) {
  const meter = meters.get(name);
  if (meter) return reading(meter, v);
  const c = controls.get(name);
  if (!c) return;
  c.value = v;
  c.output.textContent = show(c.p, v);
  if (performance.now() - c.touched < 400) return; // the performer's own drag wins over its echo
  if (c.p.kind === "enum") c.input.value = String(Math.round(v));
  else if (c.p.kind === "bool") c.input.checked = v >= 0.5;
  else c.input.value = String(Math.round(toNorm(c.p, v) * SLIDER_STEPS));
}

// -- actions: a button each, with its arguments' fields --
function makeAction(a) {
  const row = el("div", {class: "action", "data-action": a.name, title: a.doc});
  const fields = a.args.map((arg, i) => {
    const choices = a.choices[i] || [];
    let f;
    if (arg.type === "str") {
      f = el("input", {type: "text", placeholder: arg.name, "aria-label": `${a.name} ${arg.name}`});
      if (choices.length) {
        const list = el("datalist", {id: `choices-${a.name}-${arg.name}`});
        choices.forEach(c => list.append(el("option", {value: c})));
        row.append(list);
        f.setAttribute("list", list.id);
        if (a.name !== "preset.save") f.value = choices[0];
      }
    } else if (choices.length) {
      f = el("select", {"aria-label": `${a.name} ${arg.name}`});
      choices.forEach(c => f.append(el("option", {value: c, text: `${arg.name} ${c}`})));
    } else {
      f = el("input", {type: "number", step: "any", "aria-label": `${a.name} ${arg.name}`, title: arg.doc});
      if (arg.min !== undefined) { f.min = arg.min; f.max = arg.max; }
      if (arg.default !== undefined) f.value = arg.default;
      else if (a.value !== undefined && a.args.length === 1) f.value = Math.round(a.value * 10) / 10; // the tempo now
      f.placeholder = arg.name;
    }
    return {arg, f};
  });
  const button = el("button", {type: "button", text: a.title});
  button.addEventListener("click", () => {
    const args = [];
    for (const {arg, f} of fields) {
      const empty = f.value.trim() === "" || (arg.type !== "str" && !Number.isFinite(Number(f.value)));
      if (empty && arg.default !== undefined) break; // the rest take their defaults
      if (empty) return error(`${a.name}: ${arg.name} first (${arg.doc})`); // never a 0 by mistake
      args.push(arg.type === "str" ? f.value : Number(f.value));
    }
    send({type: "fire", action: a.name, args});
  });
  row.append(button, ...fields.map(x => x.f), el("small", {text: a.doc}));
  return row;
}

// -- the layout, from hello --
function build(h) {
  hello = h;
  controls.clear();
  const tabs = document.getElementById("tabs"), groups = document.getElementById("groups");
  tabs.replaceChildren(); groups.replaceChildren();
  h.groups.forEach((g, i) => {
    const box = el("div", {class: "group" + (i === 0 ? " on" : ""), id: "group-" + g.id});
    for (const s of g.sections) {
      const sec = el("div", {class: "section"}, el("h3", {text: s.title}));
      s.params.forEach(p => sec.append(makeControl(p)));
      box.append(sec);
    }
    const tab = el("button", {type: "button", class: i === 0 ? "on" : "", text: g.title, "data-group": g.id});
    tab.addEventListener("click", () => {
      for (const t of tabs.children) t.classList.toggle("on", t === tab);
      for (const b of groups.children) b.classList.toggle("on", b === box);
    });
    tabs.append(tab); groups.append(box);
  });
  buildActions(h.actions);
  const picks = document.getElementById("level-picks"), previews = document.getElementById("previews");
  picks.replaceChildren(document.createTextNode("feature levels: "));
  for (const fig of [...previews.children]) if (fig.dataset.level !== "0") fig.remove();
  pictures.clear();
  pictures.set(0, document.getElementById("preview-0"));
  for (let lvl = 1; lvl <= h.levels; lvl++) {
    const box = el("input", {type: "checkbox", "data-level": lvl});
    box.addEventListener("change", sendLevels);
    picks.append(el("label", {}, box, ` l${lvl}`));
  }
  buildMusic(h.readings);
  document.getElementById("learn-mode").disabled = !h.learn;
  for (const [name, v] of Object.entries(h.values)) setValue(name, v);
  if (h.status) status(h.status);
}
function buildActions(actions) {
  const acts = document.getElementById("actions");
  acts.replaceChildren(el("h3", {text: "actions"}));
  actions.forEach(a => acts.append(makeAction(a)));
}
function sendLevels() {
  // A hidden tab (another tab in front, a tablet asleep) or a preview turned off asks for no pictures.
  const rate = Number(document.getElementById("preview-rate").value);
  const hidden = document.visibilityState === "hidden" || rate === 0;
  const levels = hidden ? [] : [0];
  const previews = document.getElementById("previews");
  for (const box of document.querySelectorAll("#level-picks input")) {
    const lvl = Number(box.dataset.level);
    let fig = previews.querySelector(`figure[data-level="${lvl}"]`);
    if (box.checked) {
      if (!hidden) levels.push(lvl);
      if (!fig) {
        const img = el("canvas", {"aria-label": `level ${lvl}`});
        fig = el("figure", {class: "preview", "data-level": lvl}, img, el("figcaption", {text: `level ${lvl} (its principal components)`}));
        previews.append(fig);
        pictures.set(lvl, img);
      }
    } else if (fig) { fig.remove(); pictures.delete(lvl); }
  }
  send({type: "levels", levels, fps: rate || 1});
}
document.getElementById("preview-rate").addEventListener("change", sendLevels);

// -- the music and the clock: read-only meters (hello.readings), the bar's four beats --
const meters = new Map();
function buildMusic(readings) {
  const box = document.getElementById("music");
  meters.clear();
  box.replaceChildren(el("h3", {text: "music · clock"}));
  for (const r of readings || []) {
    const row = el("div", {class: "reading", title: r.doc});
    let view;
    if (r.name === "tempo.bar") {
      view = el("span", {class: "bar"});
      for (let b = 0; b < 4; b++) view.append(el("i", {"data-beat": b}));
    } else {
      view = el("meter", {min: r.min, max: r.max, value: 0, "aria-label": r.name});
    }
    const out = el("output", {text: "0"});
    row.append(el("span", {text: r.name.replace(/^audio\./, "")}), view, out);
    box.append(row);
    meters.set(r.name, {r, view, out});
  }
}
function reading(m, v) {
  if (m.r.name === "tempo.bar") {
    for (const dot of m.view.children) dot.classList.toggle("on", Number(dot.dataset.beat) === Math.floor(v));
    m.out.textContent = (Math.floor(v) + 1) + "/4";
  } else {
    m.view.value = v;
    m.out.textContent = m.r.max > 1 ? v.toFixed(1) : v.toFixed(2);
  }
}

// -- the status panel --
const STATUS_ROWS = [
  ["fps", s => `${s.fps_now ?? s.fps} of ${s.target_fps} (${s.fps} over the show)`, s => (s.fps_now ?? s.fps) < 0.9 * s.target_fps],
  ["engine", s => `${s.engine_ms} ms (p99 ${s.engine_p99_ms})`],
  ["late frames", s => `${s.late} of ${s.slots} slots`, s => s.late > 0],
  ["sink drops", s => String(s.sink_dropped)],
  ["latency", s => `${s.latency_ms} ms`],
  ["reseeds · nudges", s => `${s.reseeds} · ${s.nudges}`],
  ["flash-limited", s => String(s.flash_limited)],
  ["threads", s => s.threads ?? "fixed"],
  ["tempo", s => `${s.bpm} bpm · ${s.tempo_source ?? "internal"}` + (s.link_peers !== undefined ? ` · Link, ${s.link_peers} peers` : "")],
  ["waiting", s => Object.entries(s.waiting || {}).map(([a, b]) => `${a} on beat ${b}`).join(", ") || "none"],
  ["model", s => s.model ?? "?"],
  ["snapshots", s => s.snapshots ? (s.snapshots.slots.join(", ") || "none") + (s.snapshots.file ? ` · kept in ${s.snapshots.file}` : " · not kept (--snapshots FILE)") : "?"],
];
function status(s) {
  const body = document.querySelector("#status tbody");
  const rows = STATUS_ROWS.map(([k, f, bad]) => el("tr", {}, el("td", {text: k}), el("td", {text: String(f(s)), class: bad && bad(s) ? "bad" : ""})));
  rows.push(el("tr", {}, el("td", {text: "frame"}), el("td", {text: String(s.frame), "data-figure": "frame"})));
  for (const part of s.surfaces || []) rows.push(el("tr", {}, el("td", {text: part.split(" ")[0]}), el("td", {text: part.split(" ").slice(1).join(" ")})));
  for (const sink of s.sinks || []) rows.push(el("tr", {}, el("td", {text: "sink " + sink.spec}), el("td", {text: sink.ok ? "ok" : "failed: " + sink.why, class: sink.ok ? "" : "bad"})));
  body.replaceChildren(...rows);
}

// -- the socket --
function connect() {
  const url = `${location.protocol === "https:" ? "wss" : "ws"}://${location.host}/ws` + (token ? `?token=${encodeURIComponent(token)}` : "");
  ws = new WebSocket(url);
  ws.binaryType = "blob";
  const state = document.getElementById("connection");
  ws.onopen = () => { state.textContent = "live"; state.className = "ok"; retry = 500; };
  ws.onclose = () => {
    state.textContent = "reconnecting…"; state.className = "bad";
    setTimeout(connect, retry); retry = Math.min(retry * 2, 5000);
  };
  ws.onmessage = (ev) => {
    if (typeof ev.data !== "string") return picture(ev.data);
    const msg = JSON.parse(ev.data);
    if (msg.type === "hello") { build(msg); sendLevels(); }
    else if (msg.type === "values") for (const [n, v] of Object.entries(msg.values)) setValue(n, v);
    else if (msg.type === "status") status(msg);
    else if (msg.type === "error") error(msg.message);
    else if (msg.type === "learn") learnState(msg.armed, msg.learned);
    else if (msg.type === "actions") buildActions(msg.actions); // a preset saved: the menus anew
  };
}
async function picture(blob) {
  // One byte of level, then a JPEG: decoded off the page's main thread, drawn once into a canvas.
  const level = new Uint8Array(await blob.slice(0, 1).arrayBuffer())[0];
  const canvas = pictures.get(level);
  if (!canvas) return;
  let bitmap;
  try { bitmap = await createImageBitmap(blob.slice(1, blob.size, "image/jpeg")); } catch { return; }
  if (canvas.width !== bitmap.width || canvas.height !== bitmap.height) {
    canvas.width = bitmap.width; canvas.height = bitmap.height;
  }
  canvas.getContext("2d").drawImage(bitmap, 0, 0);
  bitmap.close();
  canvas.dataset.frames = String(Number(canvas.dataset.frames || 0) + 1);
}
document.addEventListener("visibilitychange", () => sendLevels());
function learnState(armed, learned) {
  for (const c of document.querySelectorAll(".control.armed")) c.classList.remove("armed");
  document.getElementById("learn-state").textContent =
    armed ? `learn: move a MIDI control for ${armed}` : learned ? `learned: ${learned}` : "";
  if (armed) document.querySelector(`.control[data-param="${CSS.escape(armed)}"]`)?.classList.add("armed");
}
document.getElementById("learn-mode").addEventListener("change", (ev) => {
  learning = ev.target.checked;
  document.body.classList.toggle("learning", learning);
  if (!learning) { send({type: "learn", name: null}); learnState(null); }
});
connect();
