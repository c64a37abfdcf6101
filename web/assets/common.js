// Shared by the pages: JSON calls that turn problem details into readable errors, the
// labeller's name (kept in this browser), and small DOM helpers.

export async function call(method, url, body) {
  const init = { method, headers: {} };
  if (body instanceof FormData || body instanceof Blob) {
    init.body = body;
  } else if (body !== undefined) {
    init.headers["content-type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  const r = await fetch(url, init);
  const text = await r.text();
  const data = text ? JSON.parse(text) : null;
  if (!r.ok) {
    const e = new Error(data && data.detail ? data.detail : `${r.status} ${r.statusText}`);
    e.problem = data;
    throw e;
  }
  return data;
}

export function el(tag, attrs = {}, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === "onclick") e.addEventListener("click", v);
    else if (v !== undefined && v !== null) e.setAttribute(k, v);
  }
  for (const c of children) e.append(c instanceof Node ? c : document.createTextNode(String(c)));
  return e;
}

export function show(box, message, kind = "problem") {
  box.replaceChildren(el("div", { class: kind }, message));
}

export function labeller() {
  let name = localStorage.getItem("pg_clip.labeller");
  if (!name) {
    name = (prompt("Your name (recorded with each label):") || "").trim() || "anonymous";
    localStorage.setItem("pg_clip.labeller", name);
  }
  return name;
}

export const params = new URLSearchParams(location.search);

export function pct(x) {
  return x === null || x === undefined ? "-" : `${(x * 100).toFixed(1)}%`;
}
