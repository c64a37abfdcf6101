// Identify from an upload or the camera: one request in flight (frames are dropped while it
// runs); a label that wins three frames in a row above the margin threshold is added to the deck.
import { call, el, show, params } from "/assets/common.js";

const set = params.get("set");
const msg = document.querySelector("#msg");
const deck = [];          // labels in the order added (undo takes the last)
let streak = { label: null, n: 0, counted: false };
let inFlight = false;
let frames = { sent: 0, dropped: 0 };

document.querySelector("#where").textContent = `reference set ${set}`;

async function identify(blob) {
  const form = new FormData();
  form.append("image", blob, "frame.jpg");
  return call("POST", `/api/v1/identify?set=${encodeURIComponent(set)}&k=1`, form);
}

function showMatch(r) {
  const box = document.querySelector("#match");
  const m = r.matches[0];
  if (!m) { box.replaceChildren("no match"); box.dataset.label = ""; return; }
  box.dataset.label = m.label;
  box.replaceChildren(el("img", { src: m.thumbnail_url, alt: m.label }),
    el("div", {}, el("strong", {}, m.label), m.variant ? ` (${m.variant})` : "", el("br"),
      `score ${m.score.toFixed(3)}`, el("br"), `margin ${m.margin.toFixed(3)}`));
}

function renderDeck() {
  const counts = new Map();
  for (const l of deck) counts.set(l, (counts.get(l) || 0) + 1);
  document.querySelector("#deck tbody").replaceChildren(...[...counts].map(([l, n]) =>
    el("tr", { "data-label": l }, el("td", {}, l), el("td", {}, n))));
}

function consider(r) {
  const m = r.matches[0];
  const min = Number(document.querySelector("#margin").value) || 0;
  if (!m || m.margin < min) { streak = { label: null, n: 0, counted: false }; return; }
  if (m.label === streak.label) streak.n += 1; else streak = { label: m.label, n: 1, counted: false };
  if (streak.n >= 3 && !streak.counted) {
    streak.counted = true;
    deck.push(m.label);
    renderDeck();
    show(msg, `added ${m.label} to the deck`, "notice");
  }
}

document.querySelector("#file").addEventListener("change", async (ev) => {
  const f = ev.target.files[0];
  if (!f) return;
  const img = document.querySelector("#uploaded");
  img.src = URL.createObjectURL(f);
  img.classList.remove("hidden");
  try { showMatch(await identify(f)); } catch (e) { show(msg, e.message); }
});

document.querySelector("#camera").addEventListener("click", async () => {
  const video = document.querySelector("#video");
  try {
    video.srcObject = await navigator.mediaDevices.getUserMedia({ video: true });
  } catch (e) { show(msg, `no camera: ${e.message}`); return; }
  video.classList.remove("hidden");
  const canvas = document.createElement("canvas");
  const tick = async () => {
    if (video.videoWidth === 0) return;
    if (inFlight) { frames.dropped += 1; return; }
    inFlight = true;
    canvas.width = video.videoWidth;
    canvas.height = video.videoHeight;
    canvas.getContext("2d").drawImage(video, 0, 0);
    try {
      const blob = await new Promise((ok) => canvas.toBlob(ok, "image/jpeg", 0.9));
      const r = await identify(blob);
      frames.sent += 1;
      showMatch(r);
      consider(r);
    } catch (e) { show(msg, e.message); } finally {
      inFlight = false;
      document.querySelector("#frames").textContent = `${frames.sent} frames identified, ${frames.dropped} dropped while busy`;
    }
  };
  setInterval(tick, 100);
});

document.querySelector("#undo").addEventListener("click", () => { deck.pop(); renderDeck(); });
document.querySelector("#csv").addEventListener("click", () => {
  const counts = new Map();
  for (const l of deck) counts.set(l, (counts.get(l) || 0) + 1);
  const csv = "label,count\n" + [...counts].map(([l, n]) => `"${l.replaceAll('"', '""')}",${n}`).join("\n") + "\n";
  const a = el("a", { href: URL.createObjectURL(new Blob([csv], { type: "text/csv" })), download: `${set}-deck.csv` });
  a.click();
});
document.body.dataset.ready = "true";
