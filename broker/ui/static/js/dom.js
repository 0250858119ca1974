// Tiny DOM helpers. Everything the API returns is data typed by someone else (payloads,
// errors, queue names): it only ever becomes text nodes or attribute values, never HTML.

const SVG_NS = "http://www.w3.org/2000/svg";

function append(el, children) {
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
}

function setAttrs(el, attrs) {
  for (const [name, value] of Object.entries(attrs || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (name.startsWith("on") && typeof value === "function") {
      el.addEventListener(name.slice(2), value);
    } else if (name === "class") {
      el.setAttribute("class", Array.isArray(value) ? value.filter(Boolean).join(" ") : value);
    } else if (name === "value" && "value" in el) {
      el.value = value;
    } else if (name === "checked" || name === "disabled" || name === "selected") {
      el[name] = Boolean(value);
    } else {
      el.setAttribute(name, value === true ? "" : String(value));
    }
  }
}

// h("button", {class: "x", onclick: fn, "data-id": id}, "text", child, [more])
export function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  setAttrs(el, attrs);
  append(el, children);
  return el;
}

export function s(tag, attrs, ...children) {
  const el = document.createElementNS(SVG_NS, tag);
  setAttrs(el, attrs);
  append(el, children);
  return el;
}

export function replace(el, ...children) {
  el.replaceChildren();
  append(el, children);
  return el;
}

export function fmtTime(secs) {
  if (secs === null || secs === undefined) return "—";
  const d = new Date(secs * 1000);
  const pad = (n, w = 2) => String(n).padStart(w, "0");
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ` +
    `${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}.` +
    `${pad(d.getMilliseconds(), 3)}`;
}

export function fmtAgo(secs) {
  if (secs === null || secs === undefined) return "—";
  const delta = Date.now() / 1000 - secs;
  const abs = Math.abs(delta);
  const text = abs < 1 ? "now" : abs < 90 ? `${Math.round(abs)} s` :
    abs < 5400 ? `${Math.round(abs / 60)} min` :
    abs < 172800 ? `${Math.round(abs / 3600)} h` : `${Math.round(abs / 86400)} d`;
  if (text === "now") return text;
  return delta >= 0 ? `${text} ago` : `in ${text}`;
}

export function fmtNumber(n) {
  if (n === null || n === undefined) return "—";
  if (typeof n !== "number") return String(n);
  return Number.isInteger(n) ? n.toLocaleString("en-US") :
    n.toLocaleString("en-US", {maximumFractionDigits: 2});
}

export function fmtBytes(n) {
  if (n === null || n === undefined) return "—";
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) { n /= 1024; i++; }
  return `${n.toFixed(i ? 1 : 0)} ${units[i]}`;
}

export function fmtJson(value) {
  return value === undefined ? "" : JSON.stringify(value, null, 2);
}

export function badge(text, kind) {
  return h("span", {class: ["badge", `badge-${kind || text}`]}, text);
}

export function shortId(id) {
  return id && id.length > 13 ? `${id.slice(0, 8)}…${id.slice(-4)}` : id;
}

// A table whose body is rebuilt on every refresh; columns: [{title, cell(row) -> node}].
export function table(columns, rows, rowAttrs) {
  return h("table", {class: "grid"},
    h("thead", {}, h("tr", {}, columns.map((c) => h("th", {class: c.class}, c.title)))),
    h("tbody", {}, rows.length === 0
      ? h("tr", {}, h("td", {class: "empty", colspan: columns.length}, "nothing here"))
      : rows.map((row) => h("tr", rowAttrs ? rowAttrs(row) : {},
          columns.map((c) => h("td", {class: c.class}, c.cell(row)))))));
}

// Hash routes: "#/tasks?queue=q&status=dead" -> {path: ["tasks"], params: {...}}
export function parseHash(hash) {
  const text = (hash || "").replace(/^#\/?/, "");
  const [path, query] = text.split("?", 2);
  const params = Object.fromEntries(new URLSearchParams(query || ""));
  return {path: path ? path.split("/").map(decodeURIComponent) : [], params};
}

export function makeHash(path, params) {
  const query = new URLSearchParams(
    Object.entries(params || {}).filter(([, v]) => v !== "" && v !== null && v !== undefined));
  const text = query.toString();
  return `#/${path}${text ? `?${text}` : ""}`;
}
