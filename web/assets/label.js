// The labelling page: one image at a time, a key per class, auto-advance, undo, the next 20
// prefetched (clip.next_to_label) with their images preloaded, a notice when a label refits.
import { call, el, show, labeller, params, pct } from "/assets/common.js";

const collection = params.get("collection");
const classifier = params.get("classifier");
const mode = params.get("mode") || "uncertain";
const base = `/api/v1/collections/${encodeURIComponent(collection)}/classifiers/${encodeURIComponent(classifier)}`;
const who = labeller();
const msg = document.querySelector("#msg");
let classes = (params.get("classes") || "").split(",").map((s) => s.trim()).filter(Boolean);
let queue = [];
let current = null;
let skipped = new Set();
let recent = [];
let busy = false;

document.querySelector("#where").textContent = `${collection} / ${classifier} (${who})`;

function binary() { return classes.length === 2; }

function keymap() {
  const rows = classes.slice(0, 9).map((c, i) => [String(i + 1), c]);
  if (binary()) rows.push(["a", `accept: ${classes[0]}`], ["x", `reject: ${classes[1]}`]);
  rows.push(["space", "skip"], ["Backspace", "undo your last label"], ["?", "this help"]);
  return rows;
}

function renderKeys() {
  const box = document.querySelector("#keys");
  box.replaceChildren(...classes.slice(0, 9).map((c, i) =>
    el("button", { onclick: () => decide(c), "data-class": c }, el("kbd", {}, i + 1), " ", c)));
  box.append(el("button", { onclick: skip }, el("kbd", {}, "space"), " skip"));
  document.querySelector("#keymap").replaceChildren(...keymap().map(([k, v]) => el("tr", {}, el("td", {}, el("kbd", {}, k)), el("td", {}, v))));
}

async function refreshInfo() {
  const info = await call("GET", base);
  for (const c of info.classes) if (!classes.includes(c)) classes.push(c);
  document.querySelector("#version").textContent = info.version ? `classifier version ${info.version}, ${info.labelled} labels` : `${info.labelled} labels, not fitted yet`;
  const byClass = new Map(info.stats.map((s) => [s.label, s]));
  document.querySelector("#stats tbody").replaceChildren(...classes.map((c) => {
    const s = byClass.get(c);
    return el("tr", {}, el("td", {}, c), el("td", {}, s ? s.labelled : 0), el("td", {}, s && s.predicted !== null ? s.predicted : "-"));
  }));
  renderKeys();
}

async function refill() {
  const exclude = [...queue.map((q) => q.image_id), ...skipped, ...(current ? [current.image_id] : [])];
  const q = new URLSearchParams({ n: "20", mode, exclude: exclude.join(",") });
  if (params.get("class")) q.set("class", params.get("class"));
  const more = await call("GET", `${base}/next?${q}`);
  for (const m of more) { new Image().src = m.image_url; queue.push(m); }
}

function display() {
  const img = document.querySelector("#current");
  document.querySelector("#empty").classList.toggle("hidden", !!current);
  img.classList.toggle("hidden", !current);
  if (!current) return;
  img.src = current.image_url;
  img.dataset.imageId = current.image_id;
  document.querySelector("#image-id").textContent = current.image_id;
  document.querySelector("#prediction").textContent = current.prediction ?? "-";
  document.querySelector("#probability").textContent = pct(current.probability);
  document.querySelector("#uncertainty").textContent = current.uncertainty == null ? "-" : current.uncertainty.toFixed(3);
  const z = current.zero_shot || [];
  document.querySelector("#zero-shot").textContent = z.length ? z.map((x) => `${x.class} ${pct(x.confidence)}`).join(", ") : "-";
}

async function advance() {
  if (queue.length < 10) await refill();
  current = queue.shift() || null;
  display();
}

function renderRecent() {
  document.querySelector("#recent").replaceChildren(...recent.map((r) =>
    el("figure", { "data-image-id": r.image_id, onclick: () => reopen(r) }, el("img", { src: r.thumbnail_url, alt: "" }), el("figcaption", {}, r.label))));
}

function reopen(r) {
  if (current) queue.unshift(current);
  current = { image_id: r.image_id, image_url: r.image_url, thumbnail_url: r.thumbnail_url, prediction: null, probability: null, uncertainty: null };
  display();
}

async function decide(label) {
  if (!current || busy) return;
  busy = true;
  try {
    const done = await call("POST", `${base}/labels`, { image_ids: [current.image_id], label, labelled_by: who });
    recent = [{ ...current, label }, ...recent.filter((r) => r.image_id !== current.image_id)].slice(0, 10);
    renderRecent();
    if (done.refitted_version) {
      show(msg, `refitted to version ${done.refitted_version}`, "notice");
      queue = [];
      skipped = new Set();
      current = null;
      await refreshInfo();
    } else if (!classes.includes(label)) {
      classes.push(label);
      renderKeys();
    }
    await advance();
    if (!done.refitted_version && recent.length % 5 === 0) await refreshInfo();
  } catch (e) { show(msg, e.message); } finally { busy = false; }
}

async function skip() {
  if (!current || busy) return;
  skipped.add(current.image_id);
  await advance();
}

async function undo() {
  if (busy) return;
  busy = true;
  try {
    const [u] = await call("POST", `${base}/undo`, { labelled_by: who });
    if (!u) { show(msg, "nothing to undo", "notice"); return; }
    show(msg, `undid ${u.previous ?? "removal"} of image ${u.image_id}`, "notice");
    const back = recent.find((r) => r.image_id === u.image_id);
    recent = recent.filter((r) => r.image_id !== u.image_id);
    renderRecent();
    if (current) queue.unshift(current);
    current = back || { image_id: u.image_id, image_url: `/images/${collection}/${u.image_id}`, prediction: null, probability: null, uncertainty: null };
    display();
  } catch (e) { show(msg, e.message); } finally { busy = false; }
}

document.addEventListener("keydown", (ev) => {
  if (ev.target instanceof HTMLInputElement) return;
  const overlay = document.querySelector("#overlay");
  if (ev.key === "?") { overlay.classList.toggle("hidden"); return; }
  if (ev.key === "Escape") { overlay.classList.add("hidden"); return; }
  let label = null;
  if (/^[1-9]$/.test(ev.key)) label = classes[Number(ev.key) - 1];
  else if (binary() && ev.key === "a") label = classes[0];
  else if (binary() && ev.key === "x") label = classes[1];
  if (label) { ev.preventDefault(); decide(label); }
  else if (ev.key === " ") { ev.preventDefault(); skip(); }
  else if (ev.key === "Backspace") { ev.preventDefault(); undo(); }
});

try {
  await refreshInfo();
  await advance();
  document.body.dataset.ready = "true";
} catch (e) { show(msg, e.message); }
