"""The cuts review page: one HTML file with its CSS and script inline (no front-end build).

The photo is drawn with its tiles; the gaps between tiles (gutters, margins) are shaded and each
cut line can be dragged. Lines come from the tiles themselves: the tiles are split recursively
into groups with a clear gap between them (a guillotine layout), and each gap is a line. Moving a
line moves the facing edges of the tiles on both sides; removing one merges the tiles across it.
"""

from identity_pipeline.labeling.page_script import ELEMENT_HELPER

CUTS_PAGE_HTML = (
    r"""<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>Review cuts - identity-pipeline</title>
<style>
  body { font: 14px system-ui, sans-serif; margin: 0; background: #1e1f22; color: #ddd; }
  header { position: sticky; top: 0; z-index: 2; background: #2b2d31; padding: 8px 16px;
           display: flex; gap: 12px; align-items: center; flex-wrap: wrap;
           border-bottom: 1px solid #444; }
  header h1 { font-size: 16px; margin: 0 4px 0 0; }
  nav a { color: #9cf; margin-right: 8px; text-decoration: none; }
  nav a.current { color: #fff; font-weight: 600; border-bottom: 2px solid #4aa3ff; }
  .summary { color: #aaa; }
  .error { background: #6b1d1d; color: #fff; padding: 8px 16px; white-space: pre-line; }
  .error:empty, .message:empty { display: none; }
  #layout { display: flex; align-items: flex-start; }
  aside { width: 230px; flex: none; height: calc(100vh - 50px); overflow-y: auto;
          border-right: 1px solid #444; position: sticky; top: 50px; }
  .item { display: flex; gap: 8px; padding: 6px 8px; cursor: pointer; border-left: 4px solid transparent; }
  .item:hover { background: #2b2d31; }
  .item.current { background: #33363c; border-left-color: #4aa3ff; }
  .thumb { position: relative; width: 72px; height: 72px; flex: none; display: flex;
           align-items: center; justify-content: center; background: #111; }
  .thumb img { max-width: 72px; max-height: 72px; display: block; }
  .thumb svg { position: absolute; }
  .caption { font-size: 12px; overflow: hidden; }
  .caption .name { display: block; white-space: nowrap; overflow: hidden; text-overflow: ellipsis;
                   max-width: 130px; }
  .badge { display: inline-block; background: #444; border-radius: 3px; padding: 0 5px;
           margin: 2px 2px 0 0; font-size: 11px; }
  .badge.warn { background: #8a3b12; }
  .badge.ok { background: #1f6b45; }
  .badge.hand { background: #6b5a12; }
  main { flex: 1; padding: 10px 16px; min-width: 0; }
  #info { margin-bottom: 8px; display: flex; gap: 6px; align-items: center; flex-wrap: wrap; }
  #info .path { font-weight: 600; }
  #stage { position: relative; display: inline-block; line-height: 0; user-select: none; }
  #photo { display: block; max-width: calc(100vw - 290px); max-height: calc(100vh - 260px); }
  #overlay { position: absolute; left: 0; top: 0; width: 100%; height: 100%; touch-action: none; }
  #overlay.armed { cursor: crosshair; }
  .gap { fill: rgba(10, 10, 12, .55); pointer-events: none; }
  .tile { fill: none; stroke: #3f3; pointer-events: none; }
  .number { fill: #fff; stroke: #000; paint-order: stroke; font-weight: 700;
            text-anchor: middle; dominant-baseline: central; pointer-events: none; }
  .cut { stroke: #4aa3ff; pointer-events: none; }
  .cut.selected { stroke: #ff9f1a; }
  .hit { stroke: transparent; }
  .hit.v { cursor: col-resize; } .hit.h { cursor: row-resize; }
  .tools { margin-top: 8px; display: flex; gap: 6px; align-items: center; flex-wrap: wrap; }
  .tools input { width: 3.2em; }
  .sep { width: 12px; }
  button { font: inherit; cursor: pointer; }
  button.primary { background: #1f6b45; color: #fff; border: 1px solid #2a8; border-radius: 3px;
                   padding: 3px 12px; font-weight: 600; }
  .message { margin-top: 8px; color: #cfc; }
  .help { color: #999; font-size: 12px; max-width: 900px; }
  kbd { background: #444; border-radius: 3px; padding: 0 4px; font: 12px monospace; }
</style>
</head>
<body>
<header>
  <h1>Review cuts</h1>
  <nav><a href="/" data-testid="nav-names">Names</a><a href="/suggestions">Suggestions</a><a href="/cuts" class="current">Cuts</a></nav>
  <select id="album" data-testid="album"></select>
  <span class="summary" id="summary" data-testid="summary"></span>
  <label><input type="checkbox" id="show-done" data-testid="show-done"> show decided photos</label>
</header>
<div class="error" id="error" data-testid="error"></div>
<div id="layout">
  <aside id="queue" data-testid="queue"></aside>
  <main>
    <div id="empty" data-testid="empty" hidden></div>
    <div id="editor" hidden>
      <div id="info" data-testid="info"></div>
      <div id="stage"><img id="photo" alt="" data-testid="photo"><svg id="overlay" data-testid="overlay"></svg></div>
      <div class="tools">
        <button class="primary" id="accept" data-testid="accept">Accept (A)</button>
        <button id="next" data-testid="next">Next (N)</button>
        <button id="prev" data-testid="prev">Previous (P)</button>
        <span class="sep"></span>
        <button id="single" data-testid="single">Single (S)</button>
        <span>rows <input id="rows" data-testid="rows" type="number" min="1" max="20" value="2">
          &times; cols <input id="cols" data-testid="cols" type="number" min="1" max="20" value="2">
          gutter <input id="gutter" data-testid="gutter" type="number" min="0" value="0">
          margin <input id="margin" data-testid="margin" type="number" min="0" value="0"></span>
        <button id="grid" data-testid="grid">Set grid (G)</button>
      </div>
      <div class="tools">
        <button id="add-h" data-testid="add-h">+ Horizontal (H)</button>
        <button id="add-v" data-testid="add-v">+ Vertical (V)</button>
        <button id="remove" data-testid="remove">Remove cut (Del)</button>
        <button id="undo" data-testid="undo">Undo (Z)</button>
        <button id="reset" data-testid="reset">Reset (R)</button>
        <button id="splitter" data-testid="splitter" hidden>Back to the splitter</button>
      </div>
      <div class="message" id="message" data-testid="message"></div>
      <p class="help">Drag a cut line to move it; click a line to select it, then the arrow keys
        nudge it (<kbd>Shift</kbd>: 10 px) and <kbd>Del</kbd> or a double click removes it. Lines
        that continue each other move together; hold <kbd>Shift</kbd> to take one alone.
        <kbd>H</kbd> / <kbd>V</kbd> cut the tile under the pointer. <kbd>A</kbd> saves what you
        see and goes on: unchanged tiles are remembered as accepted; changed ones become the
        photo's line in the album's hints file, and <code>photo_tiles</code> re-runs for this
        album (with the pipeline running). <kbd>N</kbd> / <kbd>P</kbd> move without saving.</p>
    </div>
  </main>
</div>
<script>
"use strict";
const MIN_TILE = 8;  // photo pixels: no cut may leave a thinner tile
const SVG = "http://www.w3.org/2000/svg";
let data = null;      // the reply of /api/cuts
let queue = [];       // the photos this page walks through, in order
let index = -1;
let photo = null;     // the photo on screen
let boxes = [];       // its tiles as edited: [x0, y0, x1, y1] in pixels of the upright photo
let history = [];     // earlier tile sets, for undo
let selected = null;  // the selected cut: {dir, a, b, lo}
let pointer = null;   // the pointer over the photo, in photo pixels
let armed = null;     // "h" or "v": the next click on the photo adds that cut
let drag = null;
let onLine = false;   // the last press was on a cut line (its click selects, no more)
let saving = false;

"""
    + ELEMENT_HELPER
    + r"""
function svgEl(tag, attrs = {}) {
  const node = document.createElementNS(SVG, tag);
  for (const [key, value] of Object.entries(attrs)) node.setAttribute(key, value);
  return node;
}

function showError(message) { document.getElementById("error").textContent = message || ""; }
function say(message) { document.getElementById("message").textContent = message || ""; }
const album = () => document.getElementById("album").value;
const same = (first, second) => JSON.stringify(sorted(first)) === JSON.stringify(sorted(second));
const sorted = (list) => [...list].sort((p, q) => p[1] - q[1] || p[0] - q[0] || p[3] - q[3] || p[2] - q[2]);
const copy = (list) => list.map((box) => [...box]);

// --- the lines between tiles ------------------------------------------------------------------

const AXES = {v: [0, 2, 1, 3], h: [1, 3, 0, 2]};  // start, end, then the other axis's start, end

// Split the tiles into groups with a clear gap between them, along the axis giving the most
// groups, and recurse into each group; every gap is a line. Null when the tiles are no such
// layout (a pinwheel): then only whole-photo actions are offered.
function cutLines(tiles) {
  const lines = [];
  const split = (ids) => {
    if (ids.length < 2) return true;
    let best = null;
    for (const dir of ["v", "h"]) {
      const [s, e] = AXES[dir];
      const order = [...ids].sort((i, j) => tiles[i][s] - tiles[j][s]);
      const groups = [[order[0]]];
      let end = tiles[order[0]][e];
      for (const i of order.slice(1)) {
        if (tiles[i][s] >= end) groups.push([i]); else groups[groups.length - 1].push(i);
        end = Math.max(end, tiles[i][e]);
      }
      if (groups.length > 1 && (!best || groups.length > best.groups.length)) best = {dir, groups};
    }
    if (!best) return false;
    const [s, e, ps, pe] = AXES[best.dir];
    const lo = Math.min(...ids.map((i) => tiles[i][ps]));
    const hi = Math.max(...ids.map((i) => tiles[i][pe]));
    for (let g = 0; g + 1 < best.groups.length; g++) {
      const near = best.groups[g], far = best.groups[g + 1];
      lines.push({dir: best.dir, lo, hi,
                  a: Math.max(...near.map((i) => tiles[i][e])),
                  b: Math.min(...far.map((i) => tiles[i][s])),
                  near: frontier(tiles, near, best.dir, true),
                  far: frontier(tiles, far, best.dir, false)});
    }
    return best.groups.every(split);
  };
  return split(tiles.map((_, i) => i)) ? lines : null;
}

// The tiles of a group that face the line: no other tile of the group between them and it.
function frontier(tiles, group, dir, near) {
  const [s, e, ps, pe] = AXES[dir];
  const across = (i, j) => Math.max(tiles[i][ps], tiles[j][ps]) < Math.min(tiles[i][pe], tiles[j][pe]);
  return group.filter((i) => !group.some((j) => j !== i && across(i, j) &&
    (near ? tiles[j][s] >= tiles[i][e] : tiles[j][e] <= tiles[i][s])));
}

function linked(lines, line, alone) {
  if (alone) return [line];
  return lines.filter((l) => l.dir === line.dir && Math.abs(l.a - line.a) <= 1 && Math.abs(l.b - line.b) <= 1);
}

function findLine(lines, key) {
  if (!key || !lines) return null;
  return lines.find((l) => l.dir === key.dir && l.a === key.a && l.b === key.b && l.lo === key.lo)
      || lines.find((l) => l.dir === key.dir && l.a === key.a && l.b === key.b) || null;
}

// Move lines by delta (clamped so every tile keeps MIN_TILE); the tiles facing them follow.
function moveLines(tiles, lines, delta) {
  let low = -Infinity, high = Infinity;
  for (const line of lines) {
    const [s, e] = AXES[line.dir];
    low = Math.max(low, Math.max(...line.near.map((i) => tiles[i][s] + MIN_TILE)) - line.a);
    high = Math.min(high, Math.min(...line.far.map((i) => tiles[i][e] - MIN_TILE)) - line.b);
  }
  const d = low > high ? 0 : Math.min(high, Math.max(low, delta));
  const moved = copy(tiles);
  if (d === 0) return {tiles: moved, d};
  for (const line of lines) {
    const [s, e] = AXES[line.dir];
    for (const i of line.near) moved[i][e] = line.a + d;
    for (const i of line.far) moved[i][s] = line.b + d;
  }
  return {tiles: moved, d};
}

// Take lines away: the tiles facing each other across them merge (and whatever they overlap).
function removeLines(tiles, lines) {
  const parent = tiles.map((_, i) => i);
  const root = (i) => (parent[i] === i ? i : (parent[i] = root(parent[i])));
  for (const line of lines) {
    const [, , ps, pe] = AXES[line.dir];
    for (const n of line.near) for (const f of line.far) {
      if (Math.max(tiles[n][ps], tiles[f][ps]) < Math.min(tiles[n][pe], tiles[f][pe])) parent[root(n)] = root(f);
    }
  }
  const groups = new Map();
  tiles.forEach((tile, i) => {
    const r = root(i);
    const box = groups.get(r);
    groups.set(r, box ? union(box, tile) : [...tile]);
  });
  let result = [...groups.values()];
  for (let changed = true; changed;) {  // a merged tile may now overlap others: absorb them
    changed = false;
    outer: for (let i = 0; i < result.length; i++) for (let j = i + 1; j < result.length; j++) {
      if (overlap(result[i], result[j])) {
        result[i] = union(result[i], result[j]); result.splice(j, 1); changed = true; break outer;
      }
    }
  }
  return result;
}

const union = (p, q) => [Math.min(p[0], q[0]), Math.min(p[1], q[1]), Math.max(p[2], q[2]), Math.max(p[3], q[3])];
const overlap = (p, q) => Math.max(p[0], q[0]) < Math.min(p[2], q[2]) && Math.max(p[1], q[1]) < Math.min(p[3], q[3]);

// Python's round(): halves to even, so a grid here is the grid the hints file gives.
function roundHalfEven(x) {
  const r = Math.round(x);
  return Math.abs(x % 1) === 0.5 && r % 2 !== 0 ? r - 1 : r;
}

function gridSpans(extent, count, gutter, margin) {
  const available = extent - 2 * margin - gutter * (count - 1);
  if (available < count) return null;
  const edges = Array.from({length: count + 1}, (_, i) => roundHalfEven(available * i / count));
  return Array.from({length: count}, (_, i) => [margin + edges[i] + gutter * i, margin + edges[i + 1] + gutter * i]);
}

// --- editing --------------------------------------------------------------------------------

function change(tiles, key = null) {
  history.push(copy(boxes));
  boxes = tiles;
  selected = key;
  render();
}

function single() { change([[0, 0, photo.width, photo.height]]); }

function setGrid() {
  const number = (id) => Math.max(0, parseInt(document.getElementById(id).value, 10) || 0);
  const rows = Math.max(1, number("rows")), cols = Math.max(1, number("cols"));
  const ys = gridSpans(photo.height, rows, number("gutter"), number("margin"));
  const xs = gridSpans(photo.width, cols, number("gutter"), number("margin"));
  if (!ys || !xs) { say("That grid does not fit in the photo."); return; }
  change(ys.flatMap(([y0, y1]) => xs.map(([x0, x1]) => [x0, y0, x1, y1])));
}

function addCut(dir, at) {
  const i = boxes.findIndex((b) => at.x >= b[0] && at.x < b[2] && at.y >= b[1] && at.y < b[3]);
  if (i < 0) { say("Point at a tile to cut it."); return; }
  const [s, e, ps] = AXES[dir];
  const tile = boxes[i], position = Math.round(dir === "v" ? at.x : at.y);
  if (position - tile[s] < MIN_TILE || tile[e] - position < MIN_TILE) { say("Too close to the tile's edge."); return; }
  const first = [...tile], second = [...tile];
  first[e] = position; second[s] = position;
  const tiles = copy(boxes);
  tiles.splice(i, 1, first, second);
  change(tiles, {dir, a: position, b: position, lo: tile[ps]});
  say("");
}

function addOrArm(dir) {
  if (pointer) addCut(dir, pointer);
  else { armed = dir; document.getElementById("overlay").classList.add("armed"); say("Click the tile to cut."); }
}

function removeSelected(alone) {
  const lines = cutLines(boxes);
  const line = findLine(lines, selected);
  if (!line) { say("Select a cut line first (click it)."); return; }
  change(removeLines(boxes, linked(lines, line, alone)));
}

function nudge(dir, step) {
  const lines = cutLines(boxes);
  const line = findLine(lines, selected);
  if (!line || line.dir !== dir) return false;
  const {tiles, d} = moveLines(boxes, linked(lines, line, false), step);
  if (d) change(tiles, {...selected, a: line.a + d, b: line.b + d});
  return true;
}

function undo() {
  if (!history.length) return;
  boxes = history.pop();
  selected = null;
  render();
}

function reset() { if (!same(boxes, photo.boxes)) change(copy(photo.boxes)); }

// --- drawing --------------------------------------------------------------------------------

function render() {
  const overlay = document.getElementById("overlay");
  const width = photo.width, height = photo.height;
  overlay.setAttribute("viewBox", `0 0 ${width} ${height}`);
  overlay.setAttribute("preserveAspectRatio", "none");
  const scale = width / Math.max(1, overlay.clientWidth || width);  // photo px per screen px
  let shade = `M0 0H${width}V${height}H0Z`;
  for (const b of boxes) shade += `M${b[0]} ${b[1]}H${b[2]}V${b[3]}H${b[0]}Z`;
  const nodes = [svgEl("path", {d: shade, "fill-rule": "evenodd", class: "gap"})];
  sorted(boxes).forEach((b, i) => {
    nodes.push(svgEl("rect", {x: b[0], y: b[1], width: b[2] - b[0], height: b[3] - b[1],
                              class: "tile", "stroke-width": 2 * scale, "data-testid": "tile",
                              "data-box": b.join(" ")}));
    const label = svgEl("text", {x: (b[0] + b[2]) / 2, y: (b[1] + b[3]) / 2, class: "number",
                                 "font-size": 18 * scale, "stroke-width": 3 * scale});
    label.textContent = String(i + 1);
    nodes.push(label);
  });
  const lines = cutLines(boxes);
  const current = findLine(lines, selected);
  const chosen = current ? new Set(linked(lines, current, false)) : new Set();
  (lines || []).forEach((line, i) => {
    const mid = (line.a + line.b) / 2;
    const ends = line.dir === "v" ? {x1: mid, x2: mid, y1: line.lo, y2: line.hi}
                                  : {x1: line.lo, x2: line.hi, y1: mid, y2: mid};
    nodes.push(svgEl("line", {...ends, class: "cut" + (chosen.has(line) ? " selected" : ""),
                              "stroke-width": 3 * scale, "data-line": i}));
    const hit = svgEl("line", {...ends, class: `hit ${line.dir}`, "stroke-width": 14 * scale,
                               "data-testid": "cut", "data-dir": line.dir, "data-a": line.a,
                               "data-b": line.b, "data-lo": line.lo});
    hit.addEventListener("pointerdown", (event) => startDrag(event, line, lines));
    nodes.push(hit);
  });
  overlay.replaceChildren(...nodes);
  const changed = !same(boxes, photo.boxes);
  document.getElementById("accept").textContent = changed ? "Save fix (A)" : "Accept (A)";
  document.getElementById("editor").dataset.changed = changed ? "1" : "";
  document.getElementById("editor").dataset.tiles = boxes.length;
  if (!lines) say("These tiles are not made of straight cuts: set single or a grid to edit them.");
}

const key = (line) => ({dir: line.dir, a: line.a, b: line.b, lo: line.lo});

// Show which lines are selected without drawing anew: a line pressed for a (double) click must
// stay the element under the pointer.
function showSelection() {
  const lines = cutLines(boxes) || [];
  const current = findLine(lines, selected);
  const chosen = current ? new Set(linked(lines, current, false)) : new Set();
  for (const node of document.querySelectorAll("#overlay .cut")) {
    node.classList.toggle("selected", chosen.has(lines[Number(node.dataset.line)]));
  }
}

function toPhoto(event) {
  const r = document.getElementById("overlay").getBoundingClientRect();
  return {x: (event.clientX - r.left) * photo.width / r.width,
          y: (event.clientY - r.top) * photo.height / r.height};
}

function startDrag(event, line, lines) {
  event.preventDefault();
  event.stopPropagation();
  selected = key(line);
  onLine = true;
  drag = {line, lines: linked(lines, line, event.shiftKey), start: copy(boxes), from: toPhoto(event), d: 0};
  document.getElementById("overlay").setPointerCapture(event.pointerId);
  showSelection();
}

function dragTo(event) {
  const at = toPhoto(event);
  const along = drag.line.dir === "v" ? at.x - drag.from.x : at.y - drag.from.y;
  const {tiles, d} = moveLines(drag.start, drag.lines, Math.round(along));
  if (d === drag.d) return;
  drag.d = d;
  boxes = tiles;
  selected = {...key(drag.line), a: drag.line.a + d, b: drag.line.b + d};
  render();
}

function endDrag() {
  if (drag.d) history.push(drag.start);
  drag = null;
}

// --- the queue ------------------------------------------------------------------------------

function badges(p) {
  const list = [];
  if (p.confidence !== null) list.push(el("span", {class: "badge", text: `conf ${p.confidence.toFixed(2)}`}));
  if (p.review) list.push(el("span", {class: "badge warn", text: "review"}));
  if (p.status === "accepted") list.push(el("span", {class: "badge ok", text: "accepted"}));
  if (p.status === "by_hand") list.push(el("span", {class: "badge hand", text: "by hand"}));
  if (p.pending) list.push(el("span", {class: "badge warn", text: "re-run pending"}));
  return list;
}

function thumb(p) {
  const image = el("img", {src: photoUrl(p, 160), loading: "lazy", alt: ""});
  const outline = svgEl("svg", {viewBox: `0 0 ${p.width} ${p.height}`, preserveAspectRatio: "none"});
  const fit = Math.min(72 / p.width, 72 / p.height);
  outline.setAttribute("width", p.width * fit);
  outline.setAttribute("height", p.height * fit);
  for (const b of p.boxes) {
    outline.append(svgEl("rect", {x: b[0], y: b[1], width: b[2] - b[0], height: b[3] - b[1],
                                  fill: "none", stroke: "#3f3", "stroke-width": 2 / fit}));
  }
  return el("div", {class: "thumb"}, [image, outline]);
}

const photoUrl = (p, side) => `/cuts/photo/${encodeURIComponent(album())}/${p.id}.jpg?side=${side}`;

function renderQueue() {
  const aside = document.getElementById("queue");
  aside.replaceChildren(...queue.map((p, i) =>
    el("div", {class: "item" + (i === index ? " current" : ""), "data-testid": "queue-item",
               "data-photo": p.id, title: p.path, onclick: () => open(i)},
      [thumb(p), el("div", {class: "caption"}, [el("span", {class: "name", text: p.path}), ...badges(p)])])));
}

function open(i) {
  index = i;
  photo = queue[i];
  boxes = copy(photo.boxes);
  history = [];
  selected = null;
  armed = null;
  document.getElementById("editor").hidden = false;
  document.getElementById("empty").hidden = true;
  document.getElementById("editor").dataset.photo = photo.id;
  const image = document.getElementById("photo");
  image.onload = () => { if (photo && image.dataset.photo === photo.id) render(); };
  image.dataset.photo = photo.id;
  image.src = photoUrl(photo, 1600);
  const info = document.getElementById("info");
  info.replaceChildren(el("span", {text: `${i + 1} of ${queue.length}`}),
                       el("span", {class: "path", text: photo.path}),
                       el("span", {class: "badge", text: `${photo.width}×${photo.height}`}),
                       el("span", {class: "badge", text: photo.kind}),
                       el("span", {class: "badge", text: `by ${photo.decided_by}`}),
                       ...badges(photo),
                       ...(photo.hint ? [el("span", {class: "badge hand", text: photo.hint})] : []),
                       ...(photo.note ? [el("span", {class: "badge warn", text: photo.note})] : []));
  document.getElementById("splitter").hidden = !photo.hint;
  for (const item of document.querySelectorAll(".item")) {
    item.classList.toggle("current", item.dataset.photo === photo.id);
    if (item.dataset.photo === photo.id) item.scrollIntoView({block: "nearest"});
  }
  render();
}

function showEmpty() {
  photo = null;
  index = -1;
  document.getElementById("editor").hidden = true;
  const empty = document.getElementById("empty");
  empty.hidden = false;
  empty.textContent = data && data.photos.length
    ? "Nothing left to review in this album: every photo is accepted or decided by hand. " +
      "Tick 'show decided photos' to look at them again."
    : (data && data.message) || "No photos yet.";
}

function buildQueue(keepId) {
  const all = document.getElementById("show-done").checked;
  queue = data.photos.filter((p) => all || p.status === "to_review");
  renderQueue();
  if (!queue.length) { showEmpty(); return; }
  const found = queue.findIndex((p) => p.id === keepId);
  open(found >= 0 ? found : Math.min(Math.max(index, 0), queue.length - 1));
}

async function load(keepId) {
  const chosen = album();
  const response = await fetch("/api/cuts" + (chosen ? "?album=" + encodeURIComponent(chosen) : ""));
  const reply = await response.json().catch(() => ({error: response.statusText}));
  if (!response.ok) { showError(reply.error); return; }
  data = reply;
  const select = document.getElementById("album");
  select.replaceChildren(...data.albums.map((name) => el("option", {value: name, text: name})));
  if (data.album) select.value = data.album;
  showError(data.problems ? data.problems.join("\n") : "");
  const s = data.summary;
  document.getElementById("summary").textContent = s
    ? `${s.to_review} to review (${s.flagged} flagged), ${s.accepted} accepted, ${s.by_hand} by hand` +
      (s.pending ? `, ${s.pending} waiting for photo_tiles` : "")
    : "";
  if (!data.photos) { queue = []; renderQueue(); showEmpty(); return; }
  buildQueue(keepId);
  document.body.dataset.loaded = "1";
}

async function post(path, body) {
  const response = await fetch(path, {method: "POST", headers: {"Content-Type": "application/json"},
                                      body: JSON.stringify(body)});
  const reply = await response.json().catch(() => ({error: response.statusText}));
  if (!response.ok) { showError(reply.error || response.statusText); return null; }
  showError("");
  return reply;
}

async function save() {
  if (!photo || saving) return;
  saving = true;
  try {
    const next = queue[index + 1];
    const reply = await post("/api/cuts/save", {album: album(), photo: photo.id, boxes});
    if (!reply) return;
    if (reply.action === "accepted") say(`Accepted ${reply.path}: it will not be asked again.`);
    else if (reply.action === "hint") say(`Saved to ${reply.file}: ${reply.path}, ${reply.spec}. ` +
      "photo_tiles re-runs for this album when the album sensor sees the file change.");
    else say(`${reply.path}: nothing to change.`);
    await load(next ? next.id : photo.id);
  } finally {
    saving = false;
  }
}

async function backToSplitter() {
  const reply = await post("/api/cuts/splitter", {album: album(), photo: photo.id});
  if (!reply) return;
  say(`${reply.path}: its line is gone from ${reply.file}; the splitter cuts it on the next run.`);
  await load(photo.id);
}

function step(by) {
  if (queue.length) open((index + by + queue.length) % queue.length);
}

// --- wiring ---------------------------------------------------------------------------------

const overlay = document.getElementById("overlay");
overlay.addEventListener("pointermove", (event) => {
  if (!photo) return;
  pointer = toPhoto(event);
  if (drag) dragTo(event);
});
// A line captures the pointer while pressed, so its click and double click reach the overlay.
overlay.addEventListener("pointerdown", () => { onLine = false; });
overlay.addEventListener("pointerup", () => { if (drag) endDrag(); });
overlay.addEventListener("pointerleave", () => { if (!drag) pointer = null; });
overlay.addEventListener("dblclick", (event) => { if (photo && onLine) removeSelected(event.shiftKey); });
overlay.addEventListener("click", (event) => {
  if (!photo || onLine) return;
  if (armed) {
    const dir = armed;
    armed = null;
    overlay.classList.remove("armed");
    addCut(dir, toPhoto(event));
  } else if (selected) { selected = null; showSelection(); }
});
window.addEventListener("resize", () => photo && render());

const buttons = {accept: save, next: () => step(1), prev: () => step(-1), single, grid: setGrid,
                 "add-h": () => { pointer = null; addOrArm("h"); }, "add-v": () => { pointer = null; addOrArm("v"); },
                 remove: () => removeSelected(false), undo, reset, splitter: backToSplitter};
for (const [id, action] of Object.entries(buttons)) {
  document.getElementById(id).addEventListener("click", (event) => { event.currentTarget.blur(); action(); });
}
document.getElementById("album").addEventListener("change", () => { index = -1; load(); });
document.getElementById("show-done").addEventListener("change", () => buildQueue(photo && photo.id));

document.addEventListener("keydown", (event) => {
  if (!photo || event.target.matches("input, select, textarea")) {
    if (event.key === "Enter" && event.target.closest && event.target.closest(".tools")) setGrid();
    return;
  }
  if ((event.ctrlKey || event.metaKey) && event.key.toLowerCase() === "z") { undo(); event.preventDefault(); return; }
  if (event.ctrlKey || event.metaKey || event.altKey) return;
  const arrows = {ArrowLeft: ["v", -1], ArrowRight: ["v", 1], ArrowUp: ["h", -1], ArrowDown: ["h", 1]};
  if (event.key in arrows) {
    const [dir, sign] = arrows[event.key];
    if (nudge(dir, sign * (event.shiftKey ? 10 : 1))) event.preventDefault();
    return;
  }
  const actions = {a: save, n: () => step(1), p: () => step(-1), s: single, g: setGrid,
                   h: () => addOrArm("h"), v: () => addOrArm("v"), z: undo, r: reset,
                   delete: () => removeSelected(event.shiftKey), backspace: () => removeSelected(event.shiftKey),
                   escape: () => { selected = null; armed = null; overlay.classList.remove("armed"); render(); }};
  const action = actions[event.key.toLowerCase()];
  if (action) { event.preventDefault(); action(); }
});
load();
</script>
</body>
</html>
"""
)
