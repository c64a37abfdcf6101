// Duplicate groups (clip.duplicates): per image keep or trash, the largest file kept by
// default; saving a group labels its images for a keep/trash classifier (default "dedupe").
import { call, el, show, labeller, params } from "/assets/common.js";

const collection = params.get("collection");
const classifier = params.get("classifier") || "dedupe";
const who = labeller();
const msg = document.querySelector("#msg");
let groups = [];
let current = 0;

document.querySelector("#where").textContent = `duplicates in ${collection} (saved as ${classifier}, ${who})`;

function render() {
  document.querySelector("#groups").replaceChildren(...groups.map((g, i) => {
    const box = el("div", { class: "group" + (i === current ? " current" : "") + (g.saved ? " saved" : ""), "data-group": i },
      el("div", {}, `${g.kind} duplicates, similarity ${g.similarity.toFixed(3)} `,
        el("button", { onclick: () => { setAll(i, "keep"); } }, "keep all"),
        el("button", { onclick: () => { setAll(i, "trash"); } }, "trash all"),
        el("button", { onclick: () => save(i) }, g.saved ? "saved" : "save")));
    box.append(el("div", { class: "images" }, ...g.images.map((m) => {
      const f = el("figure", { class: m.decision, "data-image-id": m.image_id, "data-decision": m.decision,
                                onclick: () => { m.decision = m.decision === "keep" ? "trash" : "keep"; g.saved = false; render(); } },
        el("img", { src: m.thumbnail_url, alt: "" }), el("figcaption", {}, `#${m.image_id} ${(m.bytes / 1024).toFixed(0)} KB: ${m.decision}`));
      return f;
    })));
    return box;
  }));
}

function setAll(i, decision) {
  for (const m of groups[i].images) m.decision = decision;
  groups[i].saved = false;
  render();
}

async function save(i) {
  const g = groups[i];
  const base = `/api/v1/collections/${collection}/classifiers/${classifier}/labels`;
  try {
    for (const decision of ["keep", "trash"]) {
      const ids = g.images.filter((m) => m.decision === decision).map((m) => m.image_id);
      if (ids.length) await call("POST", base, { image_ids: ids, label: decision, labelled_by: who });
    }
    g.saved = true;
    current = Math.min(i + 1, groups.length - 1);
    show(msg, `saved group ${i + 1}: ${g.images.filter((m) => m.decision === "keep").length} kept, ` +
              `${g.images.filter((m) => m.decision === "trash").length} trashed`, "notice");
    render();
  } catch (e) { show(msg, e.message); }
}

async function find() {
  try {
    const t = document.querySelector("#threshold").value;
    groups = await call("GET", `/api/v1/collections/${collection}/duplicates?threshold=${t}`);
    for (const g of groups) {
      const largest = Math.max(...g.images.map((m) => m.bytes));
      let kept = false;
      for (const m of g.images) { m.decision = !kept && m.bytes === largest ? "keep" : "trash"; kept ||= m.decision === "keep"; }
    }
    current = 0;
    document.querySelector("#summary").textContent = `${groups.length} groups`;
    render();
    document.body.dataset.ready = "true";
  } catch (e) { show(msg, e.message); }
}

document.addEventListener("keydown", (ev) => {
  if (ev.target instanceof HTMLInputElement || !groups.length) return;
  if (ev.key === "k") setAll(current, "keep");
  else if (ev.key === "t") setAll(current, "trash");
  else if (ev.key === "Enter") save(current);
});
document.querySelector("#find").addEventListener("click", find);
find();
