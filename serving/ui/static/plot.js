// Small time-series plots, drawn as SVG by hand.
import { h, svg } from "./dom.js";

const W = 180;
const H = 48;

/** A labelled sparkline of points [{t, value}] (null values are gaps). */
export function sparkline(label, points, { unit = "", digits = 1, color = "#2457a6" } = {}) {
  const known = points.filter((p) => p.value !== null && p.value !== undefined);
  const last = known.length ? known[known.length - 1].value : null;
  const shown = last === null ? "–" : `${Number(last).toFixed(digits)}${unit}`;
  return h("div", { class: "plot" },
    h("div", { class: "label" }, h("span", {}, label), h("strong", {}, shown)),
    drawing(points, color),
  );
}

function drawing(points, color) {
  const box = svg("svg", { viewBox: `0 0 ${W} ${H}`, preserveAspectRatio: "none", role: "img" });
  box.append(svg("line", { x1: 0, y1: H - 1, x2: W, y2: H - 1, stroke: "#dde2ea" }));
  const known = points.filter((p) => p.value !== null && p.value !== undefined);
  if (known.length < 1) {
    box.append(svg("text", { x: W / 2, y: H / 2 + 4, "text-anchor": "middle", "font-size": 10, fill: "#5f6b7c" }, "no traffic yet"));
    return box;
  }
  const t0 = points[0].t;
  const span = Math.max(points[points.length - 1].t - t0, 1);
  const top = Math.max(...known.map((p) => p.value)) || 1;
  const x = (t) => ((t - t0) / span) * (W - 4) + 2;
  const y = (v) => H - 3 - (v / top) * (H - 8);
  // One polyline per run of known values: a gap (no requests) breaks the line.
  let run = [];
  const flush = () => {
    if (run.length === 1) box.append(svg("circle", { cx: run[0][0], cy: run[0][1], r: 1.8, fill: color }));
    if (run.length > 1) box.append(svg("polyline", { points: run.map((p) => p.join(",")).join(" "), fill: "none", stroke: color, "stroke-width": 1.6 }));
    run = [];
  };
  for (const p of points) {
    if (p.value === null || p.value === undefined) flush();
    else run.push([x(p.t).toFixed(1), y(p.value).toFixed(1)]);
  }
  flush();
  box.append(svg("text", { x: 2, y: 9, "font-size": 8, fill: "#5f6b7c" }, String(+top.toPrecision(3))));
  return box;
}
