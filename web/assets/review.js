// The review grid: thumbnails filtered and sorted by prediction, label, attribute, cluster or
// similarity to a text or an image, the score on each tile; click, shift-click and select all;
// label the selection in one call, undo it in one call.
import { call, el, show, labeller, params, pct } from "/assets/common.js";

const collection = params.get("collection");
const who = labeller();
const msg = document.querySelector("#msg");
const fields = ["text", "classifier", "class", "min_probability", "max_probability", "labelled", "attribute",
                "min_confidence", "clustering", "cluster", "sort"];
let tiles = [];
let selected = new Set();
let anchor = null;
let like = params.get("like");
let lastBulk = 0;   // changes made by the last bulk label (undo takes them all back)

document.querySelector("#where").textContent = `review ${collection} (${who})`;
const $ = (id) => document.querySelector(`#${id}`);
for (const f of fields) if (params.get(f)) $(f).value = params.get(f);

function query() {
  const q = new URLSearchParams();
  for (const f of fields) if ($(f).value) q.set(f, $(f).value);
  if (like && !q.get("text")) q.set("like", like);
  return q;
}

async function loadClassifiers() {
  const cols = await call("GET", "/api/v1/collections");
  const c = cols.find((x) => x.name === collection);
  if (!c) throw new Error(`no collection ${collection}`);
  const keep = params.get("classifier");
  for (const k of c.classifiers) $("classifier").append(el("option", { value: k }, k));
  if (keep && !c.classifiers.includes(keep)) $("classifier").append(el("option", { value: keep }, keep));
  if (keep) $("classifier").value = keep;
  await loadClasses();
}

async function loadClasses() {
  const k = $("classifier").value;
  const classes = k ? (await call("GET", `/api/v1/collections/${collection}/classifiers/${k}`)).classes : [];
  const extra = (params.get("classes") || "").split(",").filter(Boolean);
  const all = [...new Set([...classes, ...extra])];
  const keep = $("class").value;
  $("class").replaceChildren(el("option", { value: "" }, "(any)"), ...all.map((c) => el("option", { value: c }, c)));
  $("class").value = all.includes(keep) ? keep : "";
  $("classes").replaceChildren(...all.map((c) => el("button", { "data-label": c, onclick: () => bulk(c) }, c)));
}

function score(t) {
  if (t.similarity !== null) return `sim ${t.similarity.toFixed(3)}`;
  if (t.probability !== null) return `${t.prediction} ${pct(t.probability)}`;
  if (t.attribute_confidence !== null) return `attr ${pct(t.attribute_confidence)}`;
  return `#${t.image_id}`;
}

function render() {
  $("grid").replaceChildren(...tiles.map((t, i) => {
    const tile = el("div", { class: "tile" + (selected.has(t.image_id) ? " selected" : ""), "data-image-id": t.image_id },
      el("img", { src: t.thumbnail_url, alt: "", loading: "lazy" }),
      el("span", { class: "score" }, score(t)),
      el("a", { class: "more", href: "#", title: "images most like this one" }, "more like this"));
    if (t.label) tile.append(el("span", { class: "badge" }, t.label));
    tile.addEventListener("click", (ev) => {
      if (ev.target.classList.contains("more")) { ev.preventDefault(); like = String(t.image_id); $("text").value = ""; load(); return; }
      if (ev.shiftKey && anchor !== null) {
        const [a, b] = [Math.min(anchor, i), Math.max(anchor, i)];
        for (let j = a; j <= b; j++) selected.add(tiles[j].image_id);
      } else if (selected.has(t.image_id)) selected.delete(t.image_id); else selected.add(t.image_id);
      anchor = i;
      render();
    });
    return tile;
  }));
  $("count").textContent = `${selected.size} selected of ${tiles.length} shown`;
}

async function load() {
  try {
    const g = await call("GET", `/api/v1/collections/${collection}/grid?${query()}`);
    tiles = g.tiles;
    selected = new Set([...selected].filter((id) => tiles.some((t) => t.image_id === id)));
    anchor = null;
    render();
    $("count").textContent += ` (${g.total} match${g.fitted ? "" : "; classifier not fitted"})`;
    document.body.dataset.ready = "true";
  } catch (e) { show(msg, e.message); }
}

async function bulk(label) {
  const k = $("classifier").value;
  if (!k) { show(msg, "choose a classifier to label for"); return; }
  if (selected.size === 0) { show(msg, "select images first (click, shift-click, select all)"); return; }
  try {
    const r = await call("POST", `/api/v1/collections/${collection}/classifiers/${k}/labels`,
      { image_ids: [...selected], label, labelled_by: who });
    lastBulk = r.changed;
    show(msg, `labelled ${r.changed} as ${label}` + (r.refitted_version ? `; refitted to version ${r.refitted_version}` : ""), "notice");
    selected = new Set();
    await loadClasses();
    await load();
  } catch (e) { show(msg, e.message); }
}

$("filters").addEventListener("submit", (ev) => { ev.preventDefault(); if ($("text").value) like = null; load(); });
$("classifier").addEventListener("change", async () => { await loadClasses(); load(); });
$("all").addEventListener("click", () => { tiles.forEach((t) => selected.add(t.image_id)); render(); });
$("none").addEventListener("click", () => { selected = new Set(); render(); });
$("newclass").addEventListener("keydown", (ev) => { if (ev.key === "Enter" && ev.target.value) { ev.preventDefault(); bulk(ev.target.value.trim()); } });
$("undo").addEventListener("click", async () => {
  const k = $("classifier").value;
  if (!k) return;
  try {
    const u = await call("POST", `/api/v1/collections/${collection}/classifiers/${k}/undo`, { labelled_by: who, steps: Math.max(lastBulk, 1) });
    lastBulk = 0;
    show(msg, u.length ? `undid ${u.length} label${u.length > 1 ? "s" : ""}` : "nothing to undo", "notice");
    await load();
  } catch (e) { show(msg, e.message); }
});

try { await loadClassifiers(); await load(); } catch (e) { show(msg, e.message); }
