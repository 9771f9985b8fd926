// Building elements without a framework: h() for HTML, svg() for SVG.

/** An HTML element: attributes (on* are listeners, class/text/html shortcuts), then children. */
export function h(tag, attrs = {}, ...children) {
  return fill(document.createElement(tag), attrs, children);
}

/** An SVG element, as h() builds HTML ones. */
export function svg(tag, attrs = {}, ...children) {
  return fill(document.createElementNS("http://www.w3.org/2000/svg", tag), attrs, children);
}

function fill(el, attrs, children) {
  for (const [name, value] of Object.entries(attrs)) {
    if (value === undefined || value === null || value === false) continue;
    if (name.startsWith("on")) el.addEventListener(name.slice(2), value);
    else if (name === "text") el.textContent = value;
    else el.setAttribute(name, value === true ? "" : String(value));
  }
  for (const child of children.flat()) {
    if (child === undefined || child === null || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return el;
}

/** A table: headers (a "num:" prefix right-aligns a column) and rows of cells. */
export function table(headers, rows) {
  const cls = (head) => (head?.startsWith("num:") ? "num" : null);
  return h("table", {},
    h("thead", {}, h("tr", {}, headers.map((head) => h("th", { class: cls(head) }, head.replace(/^num:/, ""))))),
    h("tbody", {}, rows.map((row) => h("tr", {}, row.map((cell, i) => h("td", { class: cls(headers[i]) }, cell))))),
  );
}

export function badge(text, kind = text) {
  return h("span", { class: `badge ${kind}` }, text);
}

export function when(iso) {
  if (!iso) return "–";
  const d = new Date(iso);
  return isNaN(d) ? iso : d.toLocaleString();
}

export function fixed(value, digits = 1, unit = "") {
  return value === null || value === undefined ? "–" : `${Number(value).toFixed(digits)}${unit}`;
}

export const COLORS = ["#2457a6", "#1d7f4e", "#b26b00", "#7a3fb0", "#b3261e", "#00838f"];
