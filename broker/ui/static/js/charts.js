// Charts drawn as plain SVG (no library): a time-series line chart and stacked bars.
// Colours come from CSS classes (series-*), so the page needs no inline style.

import {h, s, fmtNumber} from "./dom.js";

function niceMax(value) {
  if (!(value > 0)) return 1;
  const power = 10 ** Math.floor(Math.log10(value));
  for (const step of [1, 2, 2.5, 5, 10]) {
    if (value <= step * power) return step * power;
  }
  return 10 * power;
}

// series: [{name, cls, points: [[unixSecs, value], ...]}]; the x axis ends now.
export function lineChart(series, {windowSecs = 300, width = 600, height = 190, unit = ""} = {}) {
  const m = {left: 48, right: 12, top: 10, bottom: 24};
  const w = width - m.left - m.right, hgt = height - m.top - m.bottom;
  const now = Date.now() / 1000, start = now - windowSecs;
  const max = niceMax(Math.max(0, ...series.flatMap((x) => x.points.map((p) => p[1]))));
  const x = (t) => m.left + ((t - start) / windowSecs) * w;
  const y = (v) => m.top + hgt - (v / max) * hgt;
  const svg = s("svg", {viewBox: `0 0 ${width} ${height}`, class: "chart", role: "img"});
  for (let i = 0; i <= 4; i++) {
    const value = (max * i) / 4;
    svg.append(s("line", {x1: m.left, x2: width - m.right, y1: y(value), y2: y(value),
                          class: "gridline"}),
               s("text", {x: m.left - 6, y: y(value) + 4, class: "axis-label",
                          "text-anchor": "end"}, fmtNumber(value)));
  }
  const ago = (secs) => secs >= 120 ? `-${Math.round(secs / 6) / 10} min` : `-${Math.round(secs)} s`;
  const marks = [[start, ago(windowSecs)], [start + windowSecs / 2, ago(windowSecs / 2)],
                 [now, "now"]];
  for (const [t, label] of marks) {
    svg.append(s("text", {x: x(t), y: height - 6, class: "axis-label",
                          "text-anchor": t === now ? "end" : t === start ? "start" : "middle"},
                 label));
  }
  for (const one of series) {
    const pts = one.points.filter((p) => p[0] >= start);
    if (pts.length === 0) continue;
    const d = pts.map((p, i) => `${i ? "L" : "M"}${x(p[0]).toFixed(1)},${y(p[1]).toFixed(1)}`)
      .join(" ");
    svg.append(s("path", {d, class: `line series-${one.cls}`}));
  }
  const legend = h("div", {class: "legend"}, series.map((one) => {
    const last = one.points.length ? one.points[one.points.length - 1][1] : null;
    return h("span", {class: "legend-item"}, h("span", {class: `swatch series-${one.cls}`}),
             `${one.name} `, h("b", {}, last === null ? "—" : `${fmtNumber(last)}${unit}`));
  }));
  return h("div", {class: "chart-box"}, svg, legend);
}

// rows: [{label, parts: [{name, cls, value}]}], one horizontal stacked bar per row.
export function stackedBars(rows, {width = 1200, barHeight = 18, gap = 8} = {}) {
  const labelWidth = 150, right = 60;
  const height = Math.max(1, rows.length) * (barHeight + gap) + gap;
  const max = Math.max(1, ...rows.map((r) => r.parts.reduce((a, p) => a + p.value, 0)));
  const scale = (width - labelWidth - right) / max;
  const svg = s("svg", {viewBox: `0 0 ${width} ${height}`, class: "chart bars", role: "img"});
  rows.forEach((row, i) => {
    const top = gap + i * (barHeight + gap);
    svg.append(s("text", {x: labelWidth - 8, y: top + barHeight - 5, class: "axis-label",
                          "text-anchor": "end"}, row.label));
    let left = labelWidth, total = 0;
    for (const part of row.parts) {
      if (part.value <= 0) continue;
      const wid = Math.max(1, part.value * scale);
      svg.append(s("rect", {x: left, y: top, width: wid, height: barHeight,
                            class: `bar series-${part.cls}`},
                   s("title", {}, `${part.name}: ${fmtNumber(part.value)}`)));
      left += wid;
      total += part.value;
    }
    svg.append(s("text", {x: left + 6, y: top + barHeight - 5, class: "axis-label"},
                 fmtNumber(total)));
  });
  if (rows.length === 0) {
    svg.append(s("text", {x: width / 2, y: height / 2 + 4, class: "axis-label",
                          "text-anchor": "middle"}, "no queues yet"));
  }
  return svg;
}
