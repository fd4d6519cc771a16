// Small SVG bar charts of our own (no library, no CDN): horizontal stacked bars (answers
// per department), horizontal paired bars (answer time p50/p90) and columns (sessions per
// day). Every chart has labelled axes, a legend with text, and every bar is focusable
// with its value in an aria-label, a <title> (the hover tip) and the visible tip shown on
// hover and focus; the tables beside the charts carry the same figures as text.
//
// Bars carry data-label, data-series and data-value, so what is drawn can be read back.
const NS = "http://www.w3.org/2000/svg";

function svgEl(tag, attrs = {}, ...children) {
  const node = document.createElementNS(NS, tag);
  for (const [k, v] of Object.entries(attrs)) if (v !== null && v !== undefined) node.setAttribute(k, String(v));
  for (const c of children) if (c) node.append(c instanceof Node ? c : document.createTextNode(String(c)));
  return node;
}

// A "nice" upper bound and tick step for an axis from 0 to max.
export function niceScale(max, ticks = 5) {
  if (!(max > 0)) return { top: 1, step: 1 };
  const raw = max / ticks;
  const mag = 10 ** Math.floor(Math.log10(raw));
  const step = [1, 2, 2.5, 5, 10].map((m) => m * mag).find((s) => s >= raw) || 10 * mag;
  return { top: Math.ceil(max / step) * step, step };
}

// 12, 2.5, 0.25: no float noise, enough digits for sub-second answer times.
function fmt(v) {
  if (Number.isInteger(v)) return String(v);
  return String(Number(v.toPrecision(3)));
}

// The tip: one per chart, shown next to the bar under the pointer or the focus.
function attachTip(figure, svg) {
  const tip = document.createElement("div");
  tip.className = "chart-tip";
  tip.hidden = true;
  tip.setAttribute("aria-hidden", "true"); // the bar's aria-label says it already
  figure.append(tip);
  const show = (bar) => {
    tip.textContent = bar.getAttribute("aria-label");
    const box = bar.getBoundingClientRect();
    const host = figure.getBoundingClientRect();
    tip.hidden = false;
    const left = Math.min(Math.max(0, box.left - host.left + box.width / 2 - tip.offsetWidth / 2), host.width - tip.offsetWidth);
    tip.style.setProperty("left", `${left}px`);
    tip.style.setProperty("top", `${Math.max(0, box.top - host.top - tip.offsetHeight - 6)}px`);
  };
  const hide = () => {
    tip.hidden = true;
  };
  for (const ev of ["pointerover", "focusin"]) svg.addEventListener(ev, (e) => e.target.classList?.contains("bar") && show(e.target));
  for (const ev of ["pointerout", "focusout"]) svg.addEventListener(ev, hide);
}

function legend(series) {
  const box = document.createElement("ul");
  box.className = "chart-legend";
  for (const s of series) {
    const li = document.createElement("li");
    const sw = document.createElement("span");
    sw.className = `swatch ${s.cls}`;
    sw.setAttribute("aria-hidden", "true");
    li.append(sw, document.createTextNode(s.label));
    box.append(li);
  }
  return box;
}

function frame(title, testid, series) {
  const figure = document.createElement("figure");
  figure.className = "chart";
  figure.dataset.testid = testid;
  const cap = document.createElement("figcaption");
  cap.className = "chart-title";
  cap.textContent = title;
  figure.append(cap, legend(series));
  return figure;
}

// A label cut to about `px` pixels (CJK characters count double); the bars' own labels
// and titles keep the whole name.
function fit(text, px) {
  let w = 0;
  for (let i = 0; i < text.length; i++) {
    w += text.charCodeAt(i) > 0x2e80 ? 12 : 6.6;
    if (w > px) return `${text.slice(0, Math.max(1, i - 1))}…`;
  }
  return text;
}

function bar(attrs, label, cls, seriesKey, value) {
  return svgEl(
    "rect",
    { ...attrs, class: `bar ${cls}`, tabindex: 0, role: "img", "aria-label": label, "data-series": seriesKey, "data-value": value },
    svgEl("title", {}, label),
  );
}

// Horizontal bars, one row per item; `stacked`: the series side by side in one bar,
// else one thin bar per series (grouped). rows: [{key, label, values: {series: n|null}}].
export function barChart({ title, testid, rows, series, axisLabel, stacked, unit = "" }) {
  const figure = frame(title, testid, series);
  // About the size it is shown at (half the card's width): its text stays 12 px.
  const labelW = 150;
  const plotW = 330;
  const rowH = stacked ? 26 : 12 * series.length + 10;
  const top = 8;
  const height = top + rows.length * rowH + 44;
  const totals = rows.map((r) => (stacked ? series.reduce((a, s) => a + (r.values[s.key] || 0), 0) : Math.max(0, ...series.map((s) => r.values[s.key] || 0))));
  const { top: max, step } = niceScale(Math.max(0, ...totals));
  const x = (v) => labelW + (v / max) * plotW;
  const svg = svgEl("svg", { viewBox: `0 0 ${labelW + plotW + 20} ${height}`, class: "chart-svg", role: "group", "aria-label": title });
  const axisY = top + rows.length * rowH;
  for (let i = 0; i * step <= max + 1e-9; i++) {
    const v = i * step;
    svg.append(svgEl("line", { x1: x(v), x2: x(v), y1: top, y2: axisY, class: "grid" }));
    svg.append(svgEl("text", { x: x(v), y: axisY + 16, class: "tick", "text-anchor": "middle" }, fmt(v)));
  }
  svg.append(svgEl("text", { x: labelW + plotW / 2, y: axisY + 36, class: "axis-label", "text-anchor": "middle" }, axisLabel));
  rows.forEach((r, i) => {
    const y = top + i * rowH;
    const g = svgEl("g", { "data-label": r.key, class: "chart-row" });
    g.append(svgEl("text", { x: labelW - 8, y: y + rowH / 2 + 4, class: "row-label", "text-anchor": "end" }, fit(r.label, labelW - 12), svgEl("title", {}, r.label)));
    let acc = 0;
    series.forEach((s, j) => {
      const v = r.values[s.key];
      const text = `${r.label} · ${s.label}: ${v === null || v === undefined ? "—" : fmt(v) + unit}`;
      if (stacked) {
        const w = x(acc + (v || 0)) - x(acc);
        if (v) g.append(bar({ x: x(acc), y: y + 4, width: Math.max(w, 1), height: rowH - 8 }, text, s.cls, s.key, v));
        acc += v || 0;
      } else if (v !== null && v !== undefined) {
        g.append(bar({ x: labelW, y: y + 5 + j * 12, width: Math.max(x(v) - labelW, 1), height: 10 }, text, s.cls, s.key, v));
      }
    });
    svg.append(g);
  });
  svg.append(svgEl("line", { x1: labelW, x2: labelW, y1: top, y2: axisY, class: "axis" }));
  figure.append(svg);
  attachTip(figure, svg);
  return figure;
}

// Vertical columns, one per item (days), stacked series. items: [{key, label, values}].
export function columnChart({ title, testid, items, series, axisLabel, yLabel }) {
  const figure = frame(title, testid, series);
  const left = 44;
  const plotH = 160;
  const plotW = 1040; // the card's whole width
  const top = 10;
  const totals = items.map((it) => series.reduce((a, s) => a + (it.values[s.key] || 0), 0));
  const { top: max, step } = niceScale(Math.max(0, ...totals), 4);
  const y = (v) => top + plotH - (v / max) * plotH;
  const colW = plotW / Math.max(1, items.length);
  const svg = svgEl("svg", { viewBox: `0 0 ${left + plotW + 10} ${top + plotH + 52}`, class: "chart-svg", role: "group", "aria-label": title });
  for (let i = 0; i * step <= max + 1e-9; i++) {
    const v = i * step;
    svg.append(svgEl("line", { x1: left, x2: left + plotW, y1: y(v), y2: y(v), class: "grid" }));
    svg.append(svgEl("text", { x: left - 6, y: y(v) + 4, class: "tick", "text-anchor": "end" }, fmt(v)));
  }
  svg.append(svgEl("text", { x: 12, y: top + plotH / 2, class: "axis-label", "text-anchor": "middle", transform: `rotate(-90 12 ${top + plotH / 2})` }, yLabel));
  // At most ~12 date labels under the axis, evenly spread.
  const every = Math.max(1, Math.ceil(items.length / 12));
  items.forEach((it, i) => {
    const g = svgEl("g", { "data-label": it.key, class: "chart-row" });
    let acc = 0;
    for (const s of series) {
      const v = it.values[s.key] || 0;
      const text = `${it.label} · ${s.label}: ${fmt(v)}`;
      if (v) g.append(bar({ x: left + i * colW + colW * 0.15, y: y(acc + v), width: Math.max(colW * 0.7, 1), height: y(acc) - y(acc + v) }, text, s.cls, s.key, v));
      acc += v;
    }
    if (i % every === 0) g.append(svgEl("text", { x: left + i * colW + colW / 2, y: top + plotH + 16, class: "tick", "text-anchor": "middle" }, it.short || it.label));
    svg.append(g);
  });
  svg.append(svgEl("line", { x1: left, x2: left + plotW, y1: y(0), y2: y(0), class: "axis" }));
  svg.append(svgEl("text", { x: left + plotW / 2, y: top + plotH + 40, class: "axis-label", "text-anchor": "middle" }, axisLabel));
  figure.append(svg);
  attachTip(figure, svg);
  return figure;
}
