// A small SVG chart of per-epoch accuracy (train, test) and loss; redrawn as epochs finish.

const SVG = "http://www.w3.org/2000/svg";
const SERIES = [
  { key: "train_acc", label: "train accuracy", className: "line-train" },
  { key: "test_acc", label: "test accuracy", className: "line-test" },
  { key: "loss", label: "loss", className: "line-loss" },
];

function el(name, attrs = {}, text) {
  const node = document.createElementNS(SVG, name);
  for (const [key, value] of Object.entries(attrs)) node.setAttribute(key, value);
  if (text !== undefined) node.textContent = text;
  return node;
}

/** Draw `rows` ({epoch, loss, train_acc, test_acc}) for a job of `epochs` epochs into `container`. */
export function drawChart(container, rows, epochs) {
  const width = 640, height = 260, left = 40, right = 16, top = 30, bottom = 34;
  const plotW = width - left - right, plotH = height - top - bottom;
  const maxLoss = Math.max(1, ...rows.map((r) => r.loss));
  const x = (epoch) => left + (epochs > 1 ? ((epoch - 1) / (epochs - 1)) * plotW : plotW / 2);
  const y = (value, scale = 1) => top + plotH - (value / scale) * plotH;

  const svg = el("svg", { viewBox: `0 0 ${width} ${height}`, role: "img", class: "chart-svg" });
  svg.append(el("title", {}, rows.length
    ? `After epoch ${rows.at(-1).epoch}: test accuracy ${rows.at(-1).test_acc}, loss ${rows.at(-1).loss}`
    : "No epoch finished yet"));
  for (const tick of [0, 0.25, 0.5, 0.75, 1]) {
    svg.append(el("line", { x1: left, x2: width - right, y1: y(tick), y2: y(tick), class: "grid" }));
    svg.append(el("text", { x: left - 6, y: y(tick) + 4, class: "axis", "text-anchor": "end" }, tick.toFixed(2)));
  }
  const step = Math.max(1, Math.ceil(epochs / 10));
  for (let epoch = 1; epoch <= epochs; epoch += step) {
    svg.append(el("text", { x: x(epoch), y: height - bottom + 16, class: "axis", "text-anchor": "middle" }, epoch));
  }
  svg.append(el("text", { x: left + plotW / 2, y: height - 4, class: "axis", "text-anchor": "middle" }, "epoch"));
  for (const series of SERIES) {
    const scale = series.key === "loss" ? maxLoss : 1;
    const points = rows.map((r) => `${x(r.epoch).toFixed(1)},${y(r[series.key], scale).toFixed(1)}`);
    if (points.length > 1) svg.append(el("polyline", { points: points.join(" "), class: series.className }));
    for (const point of points) {
      const [cx, cy] = point.split(",");
      svg.append(el("circle", { cx, cy, r: 3, class: series.className }));
    }
  }
  const legend = el("g", { class: "legend" });
  SERIES.forEach((series, i) => {
    legend.append(el("rect", { x: left + 8 + i * 150, y: 8, width: 12, height: 4, class: series.className }));
    const label = series.key === "loss" && maxLoss > 1 ? `loss (÷${maxLoss.toFixed(1)})` : series.label;
    legend.append(el("text", { x: left + 24 + i * 150, y: 14, class: "axis" }, label));
  });
  svg.append(legend);
  container.replaceChildren(svg);
}

/** The seed's epoch line, "Epoch 3/5 Loss: 0.3797 Train Acc: 0.9740 Test Acc: 0.9375", as a row. */
export function parseEpochLine(line) {
  const match = /^Epoch (\d+)\/(\d+) Loss: ([\d.]+) Train Acc: ([\d.]+) Test Acc: ([\d.]+)/.exec(line);
  if (!match) return null;
  const [, epoch, epochs, loss, train, test] = match;
  return { epoch: +epoch, epochs: +epochs, loss: +loss, train_acc: +train, test_acc: +test };
}
