// Per attribute: the histogram of its zero-shot logits over the collection, with the sigmoid of
// the current calibration drawn over it (and the suggested one), and the accepted count at the
// threshold: where a calibration is decided by looking.
import { call, el, show, params } from "/assets/common.js";

const collection = params.get("collection");
const msg = document.querySelector("#msg");
const NS = "http://www.w3.org/2000/svg";
const W = 800, H = 360, L = 50, R = 50, T = 15, B = 35;
document.querySelector("#where").textContent = `attributes of ${collection}`;

function svg(tag, attrs, text) {
  const e = document.createElementNS(NS, tag);
  for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, v);
  if (text !== undefined) e.textContent = text;
  return e;
}

const sigmoid = (x, center, scale) => 1 / (1 + Math.exp(-(x - center) / scale));

async function draw(a) {
  const bins = await call("GET", `/api/v1/collections/${collection}/attributes/${encodeURIComponent(a.code)}/histogram?bins=40`);
  const chart = document.querySelector("#chart");
  const lo = bins[0].lower, hi = bins[bins.length - 1].upper;
  const most = Math.max(1, ...bins.map((b) => b.images));
  const x = (v) => L + (v - lo) / (hi - lo) * (W - L - R);
  const yCount = (n) => H - B - n / most * (H - T - B);
  const yConf = (c) => H - B - c * (H - T - B);
  const parts = [svg("line", { x1: L, y1: H - B, x2: W - R, y2: H - B, stroke: "#999" })];
  for (const b of bins) {
    parts.push(svg("rect", { class: "bar", x: x(b.lower) + 0.5, y: yCount(b.images), width: Math.max(1, x(b.upper) - x(b.lower) - 1),
                             height: H - B - yCount(b.images), fill: "#9db7d6", "data-images": b.images }));
  }
  const curve = (center, scale) => Array.from({ length: 101 }, (_, i) => {
    const v = lo + (hi - lo) * i / 100;
    return `${i ? "L" : "M"}${x(v).toFixed(1)},${yConf(sigmoid(v, center, scale)).toFixed(1)}`;
  }).join(" ");
  parts.push(svg("path", { id: "curve", d: curve(a.center, a.scale), fill: "none", stroke: "#0a66c2", "stroke-width": 2 }));
  parts.push(svg("path", { id: "suggested", d: curve(a.suggested_center, a.suggested_scale), fill: "none", stroke: "#e07b00",
                           "stroke-width": 1.5, "stroke-dasharray": "5 4" }));
  const cut = a.center + a.scale * Math.log(a.threshold / (1 - a.threshold));
  if (cut > lo && cut < hi) parts.push(svg("line", { id: "threshold", x1: x(cut), y1: T, x2: x(cut), y2: H - B, stroke: "#c62828" }));
  for (let i = 0; i <= 4; i++) {
    const v = lo + (hi - lo) * i / 4;
    parts.push(svg("text", { x: x(v), y: H - 12, "text-anchor": "middle", "font-size": 12 }, v.toFixed(1)));
    parts.push(svg("text", { x: W - R + 6, y: yConf(i / 4) + 4, "font-size": 12 }, (i / 4).toFixed(2)));
  }
  parts.push(svg("text", { x: L, y: T + 2, "font-size": 12 }, `${most} images`));
  parts.push(svg("text", { x: (W - L - R) / 2 + L, y: H - 1, "text-anchor": "middle", "font-size": 12 }, "logit"));
  chart.replaceChildren(...parts);
  document.querySelector("#title").textContent = `${a.label} (${a.code})`;
  document.querySelector("#accepted").textContent =
    `${a.accepted} images accepted at threshold ${a.threshold} (center ${a.center.toFixed(2)}, scale ${a.scale.toFixed(2)}; ` +
    `suggested center ${a.suggested_center.toFixed(2)}, scale ${a.suggested_scale.toFixed(2)})`;
  document.body.dataset.shown = a.code;
}

try {
  const r = await call("GET", `/api/v1/collections/${collection}/attributes`);
  document.querySelector("#vocabulary").textContent = `(vocabulary ${r.vocabulary})`;
  document.querySelector("#list tbody").replaceChildren(...r.attributes.map((a) =>
    el("tr", { "data-code": a.code }, el("td", {}, el("a", { href: "#", onclick: (ev) => { ev.preventDefault(); draw(a).catch((e) => show(msg, e.message)); } }, a.label)),
       el("td", {}, a.accepted), el("td", {}, `${a.center.toFixed(1)} / ${a.scale.toFixed(2)}`))));
  if (r.attributes.length) await draw(r.attributes[0]);
  document.body.dataset.ready = "true";
} catch (e) { show(msg, e.message); }
