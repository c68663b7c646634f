"""The labeling page: one HTML file with its CSS and script inline (no front-end build).

It stays fast on a library of tens of thousands of faces: every card, and every block of the
faces-alone and ignored grids, is a placeholder of its estimated height until it comes near the
screen (an IntersectionObserver), and is emptied again, its height kept, when it goes far off;
a card shows its first rows of faces until "show all"; crops load lazily.
"""

from identity_pipeline.labeling.page_script import ELEMENT_HELPER

PAGE_HTML = (
    """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>Name the faces - identity-pipeline</title>
<style>
  body { font: 14px system-ui, sans-serif; margin: 0; background: #1e1f22; color: #ddd; }
  header { position: sticky; top: 0; z-index: 2; background: #2b2d31; padding: 8px 16px;
           display: flex; gap: 12px; align-items: center; flex-wrap: wrap;
           border-bottom: 1px solid #444; }
  header h1 { font-size: 16px; margin: 0 12px 0 0; }
  main { padding: 12px 16px; }
  .summary { color: #aaa; }
  .error { background: #6b1d1d; color: #fff; padding: 8px 16px; }
  .error:empty { display: none; }
  .card { background: #2b2d31; border-radius: 6px; margin: 0 0 14px; padding: 8px 10px; }
  .card.named { border-left: 4px solid #3c9; }
  .card.unnamed { border-left: 4px solid #888; }
  .card h2 { font-size: 14px; margin: 0 0 6px; display: flex; gap: 8px; align-items: center;
             flex-wrap: wrap; font-weight: normal; }
  .badge { background: #444; border-radius: 3px; padding: 1px 6px; font-size: 12px; }
  .badge.warn { background: #8a3b12; }
  .grid { display: flex; flex-wrap: wrap; gap: 4px; }
  .face { position: relative; width: 96px; height: 96px; cursor: pointer;
          border: 3px solid transparent; border-radius: 4px; }
  .face img { width: 96px; height: 96px; display: block; border-radius: 2px; }
  .face.outlier { border-color: #e5533d; }
  .face.selected { border-color: #4aa3ff; }
  .face .tag { position: absolute; left: 0; bottom: 0; right: 0; font-size: 10px;
               background: rgba(0,0,0,.65); padding: 1px 3px; white-space: nowrap;
               overflow: hidden; text-overflow: ellipsis; }
  .face.outlier .tag { background: rgba(170,40,20,.85); }
  input, select, button { font: inherit; }
  button { cursor: pointer; }
  details > summary { cursor: pointer; margin: 6px 0; }
  nav a { color: #8cf; margin-right: 10px; }
  nav a.here { color: #fff; text-decoration: none; font-weight: bold; }
  .more { margin-top: 6px; }
  .card h2 select { min-width: 14em; }
</style>
</head>
<body>
<header>
  <h1>Name the faces</h1>
  <nav><a href="/" class="here">Names</a><a href="/suggestions" data-testid="to-suggestions">Suggestions</a><a href="/cuts" data-testid="nav-cuts">Review cuts</a></nav>
  <span class="summary" id="summary"></span>
  <span id="selection" data-testid="selection">0 selected</span>
  <select id="move-target" data-testid="move-target"></select>
  <button id="move" data-testid="move">Move selected</button>
  <button id="ignore" data-testid="ignore">Ignore selected</button>
  <button id="clear" data-testid="clear">Clear their labels</button>
</header>
<div class="error" id="error" data-testid="error"></div>
<main id="main"><p>Loading...</p></main>
<script>
"use strict";
let state = null;
const selected = new Set();
const expanded = new Set();  // cards showing all their faces
const CARD_FACES = 36;       // faces a card shows until "show all"
const BLOCK_FACES = 60;      // faces per block of the faces-alone and ignored grids
const FACE_PITCH = 106;      // a tile (96 px + borders) and the gap, for height estimates
const NEAR = "1200px 0px";   // fill what is this close to the screen; empty what is farther

let facesPerRow = 1;  // measured once per render: reading a width forces a layout

function perRow() {
  const width = document.getElementById("main").clientWidth - 52;
  return Math.max(1, Math.floor((width + 4) / FACE_PITCH));
}

function estimateHeight(faces) {
  return 60 + Math.ceil(Math.max(faces, 1) / facesPerRow) * FACE_PITCH;
}

// A section whose content exists only while it is near the screen. Filling waits for the next
// frame and stops after a few milliseconds, the rest a frame later: scrolling never stalls on
// building a screenful of cards at once.
const FILL_BUDGET_MS = 6;
const toFill = new Set();
let fillScheduled = false;

function fillSome() {
  fillScheduled = false;
  const started = performance.now();
  for (const node of toFill) {
    if (performance.now() - started > FILL_BUDGET_MS) break;
    toFill.delete(node);
    node.replaceChildren(...node.fill());
    node.filled = true;
    node.style.minHeight = "";
  }
  if (toFill.size) scheduleFill();
}

function scheduleFill() {
  if (!fillScheduled) { fillScheduled = true; requestAnimationFrame(fillSome); }
}

const lazy = new IntersectionObserver((entries) => {
  for (const entry of entries) {
    const node = entry.target;
    if (entry.isIntersecting) {
      if (!node.filled) { toFill.add(node); scheduleFill(); }
    } else {
      toFill.delete(node);
      if (node.filled) {
        node.style.minHeight = entry.boundingClientRect.height + "px";  // keeps its place
        node.replaceChildren();
        node.filled = false;
      }
    }
  }
}, {rootMargin: NEAR});

function lazySection(attrs, faces, fill) {
  const node = el("section", attrs);
  node.style.minHeight = estimateHeight(faces) + "px";
  node.fill = fill;
  node.filled = false;
  lazy.observe(node);
  return node;
}

function blocks(faces, attrs, heading) {
  const parts = [];
  for (let start = 0; start < faces.length; start += BLOCK_FACES) {
    const chunk = faces.slice(start, start + BLOCK_FACES);
    const title = start === 0 ? heading : null;
    parts.push(lazySection({class: "block", ...attrs}, chunk.length, () =>
      [...(title ? [el("h2", {text: title})] : []), el("div", {class: "grid"}, chunk.map(faceTile))]));
  }
  return parts;
}

"""
    + ELEMENT_HELPER
    + """
function showError(message) { document.getElementById("error").textContent = message || ""; }

async function post(path, body) {
  const response = await fetch(path, {
    method: "POST", headers: {"Content-Type": "application/json"}, body: JSON.stringify(body),
  });
  const reply = await response.json().catch(() => ({error: response.statusText}));
  if (response.status === 409 && reply.needs_name) {
    const name = window.prompt(reply.error + "\\nName:");
    if (name && name.trim()) return post(path, {...body, name: name.trim()});
    return false;
  }
  if (!response.ok) { showError(reply.error || response.statusText); return false; }
  showError("");
  selected.clear();
  await load();
  return true;
}

function faceTile(face) {
  const classes = ["face"];
  if (face.outlier) classes.push("outlier");
  if (selected.has(face.id)) classes.push("selected");
  const tag = face.outlier ? "outlier " + face.cosine : (face.label || "");
  const node = el("div", {class: classes.join(" "), "data-face": face.id,
                          title: `cos ${face.cosine} | quality ${face.quality} | ${face.status}`},
    [el("img", {src: `/crop/${face.id}.jpg`, loading: "lazy", alt: ""}),
     el("span", {class: "tag", text: tag})]);
  node.addEventListener("click", () => {
    if (selected.has(face.id)) selected.delete(face.id); else selected.add(face.id);
    node.classList.toggle("selected");
    updateSelection();
  });
  return node;
}

let optionsTemplate = null;  // the merge menu's options, built once per render, cloned per card

function groupOptions(select, excludeKey) {
  if (!optionsTemplate) {
    optionsTemplate = document.createDocumentFragment();
    optionsTemplate.append(el("option", {value: "", text: "choose..."}));
    for (const name of state.names) optionsTemplate.append(el("option", {value: "name:" + name, text: name}));
    for (const group of state.groups) {
      if (group.name) continue;
      optionsTemplate.append(el("option", {value: "group:" + group.key,
                                           text: `unnamed cluster ${group.cluster_id} (${group.size})`}));
    }
    optionsTemplate.append(el("option", {value: "ignore", text: "ignore (no one)"}));
  }
  select.append(optionsTemplate.cloneNode(true));
  if (excludeKey !== null) {
    for (const option of select.options) if (option.value === "group:" + excludeKey) option.remove();
  }
}

function card(group) {
  const nameInput = el("input", {type: "text", value: group.name || "", placeholder: "Name this person",
                                 "data-testid": "name-input", list: "known-names"});
  const save = el("button", {"data-testid": "name-save", text: "Save name",
    onclick: () => nameInput.value.trim() &&
      post("/api/name", {group: group.key, name: nameInput.value.trim()})});
  nameInput.addEventListener("keydown", (event) => { if (event.key === "Enter") save.click(); });
  const mergeSelect = el("select", {"data-testid": "merge-target"},
                         [el("option", {value: "", text: "choose..."})]);
  // Its options (every name and unnamed cluster) are made when it is first used, not per card.
  const fillMenu = () => {
    if (mergeSelect.options.length > 1) return;
    mergeSelect.replaceChildren();
    groupOptions(mergeSelect, group.key);
  };
  mergeSelect.addEventListener("focus", fillMenu);
  mergeSelect.addEventListener("mousedown", fillMenu);
  const merge = el("button", {text: "Merge into", "data-testid": "merge", onclick: () => {
    const value = mergeSelect.value;
    if (value.startsWith("group:")) post("/api/merge", {source: group.key, target: value.slice(6)});
    else if (value.startsWith("name:")) post("/api/move", {faces: group.faces.map(f => f.id), name_target: value.slice(5)});
    else if (value === "ignore") post("/api/ignore", {faces: group.faces.map(f => f.id)});
  }});
  const badges = [el("span", {class: "badge", text: `${group.size} faces`}),
                  el("span", {class: "badge", text: `cluster ${group.cluster_id}`})];
  if (group.outliers) badges.push(el("span", {class: "badge warn", text: `${group.outliers} suspected outliers`}));
  const all = expanded.has(group.key);
  const shown = all ? group.faces : visibleFaces(group.faces);
  const parts = [el("h2", {}, [nameInput, save, ...badges, mergeSelect, merge]),
                 el("div", {class: "grid"}, shown.map(faceTile))];
  if (shown.length < group.faces.length) {
    parts.push(el("button", {class: "more", "data-testid": "show-all",
      text: `Show all ${group.faces.length} faces`, onclick: () => {
        expanded.add(group.key);
        const node = document.querySelector(`section[data-group="${CSS.escape(group.key)}"]`);
        node.replaceChildren(...card(group));
      }}));
  }
  return parts;
}

// The first faces, and the suspected outliers (listed last) so a folded card still shows them.
function visibleFaces(faces) {
  if (faces.length <= CARD_FACES) return faces;
  const outliers = faces.filter(f => f.outlier).slice(0, CARD_FACES / 2);
  return [...faces.filter(f => !f.outlier).slice(0, CARD_FACES - outliers.length), ...outliers];
}

function cardSection(group) {
  const faces = expanded.has(group.key) ? group.faces.length : Math.min(group.faces.length, CARD_FACES);
  return lazySection({class: "card " + (group.name ? "named" : "unnamed"), "data-group": group.key,
                      "data-testid": "group"}, faces, () => card(group));
}



function updateSelection() {
  document.getElementById("selection").textContent = `${selected.size} selected`;
}

function render() {
  const main = document.getElementById("main");
  lazy.disconnect();
  toFill.clear();
  optionsTemplate = null;
  main.replaceChildren();
  facesPerRow = perRow();
  const s = state.summary;
  document.getElementById("summary").textContent =
    `${s.faces} faces, ${s.identities} named people, ${s.unnamed_clusters} unnamed clusters, ` +
    `${s.unnamed_singletons} singletons, ${s.ignored_faces} ignored` +
    (s.conflicts ? `, ${s.conflicts} clusters with conflicting names` : "");
  const datalist = el("datalist", {id: "known-names"}, state.names.map(n => el("option", {value: n})));
  main.append(datalist);
  for (const conflict of state.conflicts) {
    main.append(el("p", {class: "error", text:
      `Cluster ${conflict.cluster_id} holds faces named ${conflict.names.join(" and ")}: shown split by name.`}));
  }
  for (const group of state.groups) main.append(cardSection(group));
  if (state.singletons.length) {
    main.append(el("div", {class: "card unnamed", "data-testid": "singletons"},
      blocks(state.singletons, {},
             `Faces alone (${state.singletons.length}): select, then move or ignore`)));
  }
  if (state.ignored.length) {
    const details = el("details", {"data-testid": "ignored"},
      [el("summary", {text: `Ignored faces (${state.ignored.length})`})]);
    details.addEventListener("toggle", () => {
      if (details.open && details.children.length === 1) details.append(...blocks(state.ignored, {}, null));
    });
    main.append(details);
  }
  const target = document.getElementById("move-target");
  target.replaceChildren();
  groupOptions(target, null);
  target.append(el("option", {value: "new", text: "a new person..."}));
  updateSelection();
}

async function load() {
  const response = await fetch("/api/state");
  const reply = await response.json();
  if (!response.ok) {
    showError(reply.error);
    document.getElementById("main").replaceChildren(el("p", {text: reply.error}));
    return;
  }
  state = reply;
  render();
  document.body.dataset.loaded = "1";
}

document.getElementById("move").addEventListener("click", () => {
  const value = document.getElementById("move-target").value;
  const faces = [...selected];
  if (!faces.length || !value) return;
  if (value.startsWith("group:")) post("/api/move", {faces, target: value.slice(6)});
  else if (value.startsWith("name:")) post("/api/move", {faces, name_target: value.slice(5)});
  else if (value === "ignore") post("/api/ignore", {faces});
  else if (value === "new") {
    const name = window.prompt("Who are they? Name:");
    if (name && name.trim()) post("/api/move", {faces, name_target: name.trim()});
  }
});
document.getElementById("ignore").addEventListener("click", () => selected.size && post("/api/ignore", {faces: [...selected]}));
document.getElementById("clear").addEventListener("click", () => selected.size && post("/api/clear", {faces: [...selected]}));
load();
</script>
</body>
</html>
"""
)
