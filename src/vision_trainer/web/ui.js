// Small DOM helpers shared by the page's modules.

import { ApiError } from "./api.js";

export const $ = (selector, root = document) => root.querySelector(selector);
export const $$ = (selector, root = document) => [...root.querySelectorAll(selector)];

export function show(element, visible = true) {
  element.hidden = !visible;
}

export function setError(element, message) {
  element.textContent = message || "";
  show(element, Boolean(message));
}

export function percent(value) {
  return value === null || value === undefined ? "–" : `${(value * 100).toFixed(1)}\u00a0%`;
}

export function plural(count, word) {
  return `${count} ${word}${count === 1 ? "" : "s"}`;
}

/** An element with properties (className, textContent, ...) and attributes (data-*, aria-*). */
export function make(tag, props = {}, attrs = {}) {
  const node = Object.assign(document.createElement(tag), props);
  for (const [key, value] of Object.entries(attrs)) node.setAttribute(key, value);
  return node;
}

/** Highlight `zone` while files are dragged over it and hand dropped files to `handle`. */
export function onDrop(zone, handle) {
  for (const type of ["dragenter", "dragover"]) {
    zone.addEventListener(type, (event) => {
      event.preventDefault();
      zone.classList.add("over");
    });
  }
  zone.addEventListener("dragleave", () => zone.classList.remove("over"));
  zone.addEventListener("drop", (event) => {
    event.preventDefault();
    event.stopPropagation(); // a class inside a dataset's drop zone takes the photos itself
    zone.classList.remove("over");
    handle(event.dataTransfer.files);
  });
}

export function describe(error) {
  return error instanceof ApiError ? `${error.message} (${error.code})` : `Something went wrong: ${error.message}`;
}

/** A confusion matrix as a heatmap table: rows are the true classes, columns the predicted ones. */
export function fillConfusion(table, names, matrix) {
  table.replaceChildren();
  const top = table.createTHead().insertRow();
  top.append(make("th", { textContent: "true \\ predicted" }));
  names.forEach((n) => top.append(make("th", { scope: "col", textContent: n })));
  const cells = table.createTBody();
  matrix.forEach((counts, i) => {
    const tr = cells.insertRow();
    tr.append(make("th", { scope: "row", textContent: names[i] }));
    const total = counts.reduce((a, b) => a + b, 0) || 1;
    counts.forEach((count, j) => {
      const cell = tr.insertCell();
      cell.textContent = count;
      const share = count / total;
      cell.style.setProperty("--share", share.toFixed(3));
      cell.className = i === j ? "hit" : "miss";
      if (share > 0.55) cell.classList.add("dark");
      cell.title = `${count} ${names[i]} photo(s) predicted as ${names[j]}`;
    });
  });
}
