"""The suggestions page of the labeling app: its routes and its HTML (script inline).

``GET /suggestions`` is the page; ``GET /api/suggestions`` what it shows (``suggestions_json``);
``POST /api/suggestions/answer`` records answers: ``{"name", "yes": [faces], "no": [faces]}``
labels the "yes" faces with the name (labels.csv) and records the "no" faces as not that person
(rejections.csv); ``{"not_same": [face, face]}`` records two clusters as different people. "Same
person?" answered yes goes to ``/api/merge`` like a merge on the names page.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import Route

from identity_pipeline.labeling.http import json_error, json_object
from identity_pipeline.labeling.labels import LabelError, LabelsFileError, update_labels
from identity_pipeline.labeling.page_script import ELEMENT_HELPER
from identity_pipeline.labeling.rejections import add_rejections, read_rejections, rejections_path
from identity_pipeline.labeling.state import LabelingBook
from identity_pipeline.labeling.suggestions import (
    SuggestionSettings,
    VectorCache,
    suggest,
    suggestions_json,
)


def _face_list(body: dict[str, Any], key: str) -> list[str]:
    value = body.get(key, [])
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise LabelError(f"'{key}' must be a list of face ids")
    return value


def answer(book: LabelingBook, body: dict[str, Any]) -> dict[str, int]:
    """Record one answer (or a page of them); see the module docstring for the body."""
    rejections_file = rejections_path(book.labels_path)
    if "not_same" in body:
        pair = _face_list(body, "not_same")
        if len(pair) != 2:
            raise LabelError("'not_same' must be two face ids")
        book.state().known_faces(pair)
        recorded = add_rejections(rejections_file, not_same=[(pair[0], pair[1])])
        return {"rejections": len(recorded)}
    name = body.get("name")
    if not isinstance(name, str) or not name.strip():
        raise LabelError("'name' must be the person's name")
    yes, no = _face_list(body, "yes"), _face_list(body, "no")
    if not yes and not no:
        raise LabelError("give the faces answered 'yes' and/or 'no'")
    state = book.state()
    state.known_faces([*yes, *no])
    if set(yes) & set(no):
        raise LabelError("a face cannot be answered both 'yes' and 'no'")
    result: dict[str, int] = {}
    if yes:
        result["labels"] = len(update_labels(book.labels_path, dict.fromkeys(yes, name)))
    if no:
        recorded = add_rejections(rejections_file, not_person=[(f, name) for f in no])
        result["rejections"] = len(recorded)
    return result


def suggestion_routes(
    book: LabelingBook, settings: SuggestionSettings | None = None
) -> list[Route]:
    """The page's routes, for the labeling app to mount beside its own."""
    settings = settings or SuggestionSettings()
    cache = VectorCache()

    def page(request: Request) -> Response:
        return HTMLResponse(SUGGESTIONS_HTML)

    def compute() -> dict[str, Any]:
        state = book.state()
        rejections = read_rejections(rejections_path(book.labels_path))
        return suggestions_json(suggest(state, rejections, settings, cache), settings)

    async def listing(request: Request) -> Response:
        return await _guarded(compute)

    async def answer_endpoint(request: Request) -> Response:
        body = await json_object(request)
        if isinstance(body, Response):
            return body
        return await _guarded(lambda: {"ok": True, **answer(book, body)})

    return [
        Route("/suggestions", page),
        Route("/api/suggestions", listing),
        Route("/api/suggestions/answer", answer_endpoint, methods=["POST"]),
    ]


async def _guarded(action: Callable[[], dict[str, Any]]) -> Response:
    """Run ``action`` off the event loop (it reads and writes files); errors as JSON."""
    try:
        return JSONResponse(await run_in_threadpool(action))
    except FileNotFoundError:
        return json_error("no face clusters yet: materialize face_clusters first", 503)
    except LabelsFileError as error:
        return json_error(f"{error}. Nothing was written; fix the file by hand.", 409)
    except LabelError as error:
        return json_error(str(error), 400)


SUGGESTIONS_HTML = (
    """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>Suggestions - identity-pipeline</title>
<style>
  body { font: 14px system-ui, sans-serif; margin: 0; background: #1e1f22; color: #ddd; }
  header { position: sticky; top: 0; z-index: 2; background: #2b2d31; padding: 8px 16px;
           display: flex; gap: 12px; align-items: center; flex-wrap: wrap;
           border-bottom: 1px solid #444; }
  header h1 { font-size: 16px; margin: 0 12px 0 0; }
  nav a { color: #8cf; margin-right: 10px; }
  nav a.here { color: #fff; text-decoration: none; font-weight: bold; }
  .summary, .hint { color: #aaa; }
  .error { background: #6b1d1d; color: #fff; padding: 8px 16px; }
  .error:empty { display: none; }
  .layout { display: flex; align-items: flex-start; }
  aside { width: 230px; flex: none; padding: 12px 8px 12px 16px; position: sticky; top: 50px;
          max-height: calc(100vh - 70px); overflow-y: auto; }
  aside button { display: flex; justify-content: space-between; width: 100%; margin: 0 0 4px;
                 background: #2b2d31; color: #ddd; border: 1px solid #444; border-radius: 4px;
                 padding: 5px 8px; text-align: left; }
  aside button.current { border-color: #4aa3ff; background: #23364a; }
  main { flex: 1; padding: 12px 16px; min-width: 0; }
  main h2 { font-size: 16px; margin: 0 0 8px; }
  .examples { display: flex; gap: 4px; align-items: center; margin: 0 0 10px; }
  .toolbar { display: flex; gap: 12px; align-items: center; margin: 0 0 10px; }
  .items { display: flex; flex-wrap: wrap; gap: 8px; align-items: flex-start; }
  .item { background: #2b2d31; border-radius: 6px; padding: 6px 8px; display: flex;
          flex-direction: column; gap: 4px; border: 2px solid transparent; max-width: 100%; }
  .pairs .item { flex-direction: row; align-items: center; flex-wrap: wrap; margin: 0 0 8px; }
  .item.focus { border-color: #4aa3ff; }
  .faces { display: flex; gap: 3px; flex-wrap: wrap; align-items: center; }
  .faces img { width: 72px; height: 72px; border-radius: 3px; display: block; }
  .examples img { width: 56px; height: 56px; border-radius: 3px; border: 2px solid #3c9; }
  .count { color: #aaa; font-size: 12px; padding: 0 4px; }
  .score { color: #aaa; font-size: 12px; max-width: 240px; }
  .actions { display: flex; gap: 6px; align-items: center; flex: none; }
  .pairs .actions { margin-left: auto; }
  .yes { background: #1f6b3a; color: #fff; border: 0; border-radius: 4px; padding: 6px 12px; }
  .no { background: #6b1d1d; color: #fff; border: 0; border-radius: 4px; padding: 6px 12px; }
  .vs { font-size: 20px; color: #888; padding: 0 6px; }
  kbd { background: #444; border-radius: 3px; padding: 0 4px; font-size: 12px; }
  input, button { font: inherit; }
  button { cursor: pointer; }
</style>
</head>
<body>
<header>
  <h1>Name the faces</h1>
  <nav><a href="/">Names</a><a href="/suggestions" class="here">Suggestions</a><a href="/cuts">Cuts</a></nav>
  <span class="summary" id="summary" data-testid="summary"></span>
</header>
<div class="error" id="error" data-testid="error"></div>
<div class="layout">
  <aside id="queues" data-testid="queues"></aside>
  <main id="main"><p>Loading...</p></main>
</div>
<datalist id="known-names"></datalist>
<script>
"use strict";
let data = null;      // /api/suggestions
let current = null;   // {kind: "person", name} or {kind: "pairs"}
let items = [];       // the current queue's unanswered items, as shown
let focus = 0;
let busy = false;     // an answer is on its way: keys wait, so none lands on the wrong item

"""
    + ELEMENT_HELPER
    + """
function plural(n, one, many) { return `${n} ${n === 1 ? one : (many || one + "s")}`; }

function crop(id) { return el("img", {src: `/crop/${id}.jpg`, loading: "lazy", alt: ""}); }

function showError(message) { document.getElementById("error").textContent = message || ""; }

async function send(path, body) {
  const response = await fetch(path, {
    method: "POST", headers: {"Content-Type": "application/json"}, body: JSON.stringify(body),
  });
  const reply = await response.json().catch(() => ({error: response.statusText}));
  if (!response.ok) { showError(reply.error || response.statusText); return false; }
  showError("");
  return true;
}

function queueOf(which) {
  if (which.kind === "pairs") return data.same_person;
  return data.people.find(p => p.name === which.name) || null;
}

function renderQueues() {
  const aside = document.getElementById("queues");
  const buttons = [];
  const pairs = data.same_person;
  if (pairs.total) {
    buttons.push(el("button", {"data-testid": "queue", "data-queue": "pairs",
      class: current && current.kind === "pairs" ? "current" : "",
      onclick: () => select({kind: "pairs"})},
      [el("span", {text: "Same person?"}), el("span", {class: "count", text: pairs.total})]));
  }
  for (const person of data.people) {
    const here = current && current.kind === "person" && current.name === person.name;
    buttons.push(el("button", {"data-testid": "queue", "data-queue": "person:" + person.name,
      class: here ? "current" : "", onclick: () => select({kind: "person", name: person.name})},
      [el("span", {text: person.name}), el("span", {class: "count", text: person.total})]));
  }
  aside.replaceChildren(...buttons);
  const people = data.people.length;
  const asked = data.people.reduce((n, p) => n + p.total, 0);
  const bars = data.calibration ? ` (asked from similarity ${data.calibration.suggest_cosine}; ` +
    `${data.calibration.source})` : "";
  document.getElementById("summary").textContent = data.note ||
    `${plural(asked, "suggestion")} for ${plural(people, "person", "people")}, ` +
    `${plural(pairs.total, "same-person question")}${bars}`;
}

function select(which) {
  current = which;
  const queue = queueOf(which);
  items = queue ? [...queue.items] : [];
  focus = 0;
  renderQueues();
  renderMain();
}

function personItem(item, index) {
  const more = item.faces.length - item.shown.length;
  const score = `${item.similarity}` +
    (item.runner_up ? ` \\u00b7 or ${item.runner_up} ${item.runner_up_similarity}` : "");
  return el("div", {class: "item" + (index === focus ? " focus" : ""), "data-testid": "suggestion",
                    "data-group": item.group, onclick: () => setFocus(index)},
    [el("div", {class: "faces"}, [...item.shown.map(crop),
       ...(more > 0 ? [el("span", {class: "count", text: `+${more} more`})] : [])]),
     el("span", {class: "score", title: "similarity to them; the next closest person",
                 text: `${plural(item.faces.length, "face")}, ${score}`}),
     el("span", {class: "actions"}, [
       el("button", {class: "yes", "data-testid": "yes", text: "Yes",
                     onclick: (e) => { e.stopPropagation(); answerPerson(index, true); }}),
       el("button", {class: "no", "data-testid": "no", text: "No",
                     onclick: (e) => { e.stopPropagation(); answerPerson(index, false); }})])]);
}

function pairItem(item, index) {
  const name = el("input", {type: "text", placeholder: "their name", list: "known-names",
                            "data-testid": "pair-name"});
  const same = () => name.value.trim() ? answerPair(index, name.value.trim()) : name.focus();
  name.addEventListener("keydown", (event) => { if (event.key === "Enter") same(); });
  const side = (faces, size) => el("div", {class: "faces"}, [...faces.map(crop),
    ...(size > faces.length ? [el("span", {class: "count", text: `+${size - faces.length}`})] : [])]);
  return el("div", {class: "item" + (index === focus ? " focus" : ""), "data-testid": "pair",
                    onclick: () => setFocus(index)},
    [side(item.shown[0], item.sizes[0]), el("span", {class: "vs", text: "="}),
     side(item.shown[1], item.sizes[1]),
     el("span", {class: "score", text: `${item.sizes[0]} + ${item.sizes[1]} faces, similarity ${item.similarity}`}),
     el("span", {class: "actions"}, [name,
       el("button", {class: "yes", "data-testid": "yes", text: "Same", onclick: (e) => { e.stopPropagation(); same(); }}),
       el("button", {class: "no", "data-testid": "no", text: "Different",
                     onclick: (e) => { e.stopPropagation(); answerPair(index, null); }})])]);
}

function renderMain() {
  const main = document.getElementById("main");
  if (!current) {
    main.replaceChildren(el("p", {"data-testid": "empty", text: data.note ||
      "Nothing to suggest. Name a cluster on the Names page, and suggestions for that person appear here."}));
    return;
  }
  const queue = queueOf(current);
  const parts = [];
  if (current.kind === "person") {
    parts.push(el("h2", {text: `Is this ${current.name}?`}));
    parts.push(el("div", {class: "examples", "data-testid": "examples"},
      [el("span", {class: "hint", text: `${current.name}:`}), ...queue.examples.map(crop)]));
    const yesAll = el("button", {class: "yes", "data-testid": "yes-all",
      text: `Yes to all ${items.length} shown`, onclick: yesToAll});
    parts.push(el("div", {class: "toolbar"}, [yesAll]));
  } else {
    parts.push(el("h2", {text: "Same person? Largest first"}));
    parts.push(el("div", {class: "toolbar"}, []));
  }
  parts[parts.length - 1].append(hint());
  if (queue.total > queue.items.length) {
    parts.push(el("p", {class: "hint", text:
      `The best ${queue.items.length} of ${queue.total}; the rest come after these are answered.`}));
  }
  const list = el("div", {"data-testid": "items", class: current.kind === "person" ? "items" : "pairs"},
    items.map(current.kind === "person" ? personItem : pairItem));
  parts.push(list);
  main.replaceChildren(...parts);
}

function hint() {
  const keys = current.kind === "person"
    ? [["y", "yes"], ["n", "no"], ["\\u2191\\u2193", "move"], ["Y", "yes to all shown"]]
    : [["y", "name them"], ["n", "different"], ["\\u2191\\u2193", "move"]];
  const span = el("span", {class: "hint"});
  keys.forEach(([key, what], i) => span.append(i ? " \u00b7 " : "", el("kbd", {text: key}), ` ${what}`));
  return span;
}

function setFocus(index) {
  focus = Math.max(0, Math.min(index, items.length - 1));
  const nodes = document.querySelectorAll("#main .item");
  nodes.forEach((node, i) => node.classList.toggle("focus", i === focus));
  if (nodes[focus]) nodes[focus].scrollIntoView({block: "nearest"});
}

// One answer: recorded at once; the item leaves the list; the list is fetched again when empty.
async function settle(index, ok) {
  if (!ok) return;
  items.splice(index, 1);
  if (!items.length) { await load(); return; }
  focus = Math.min(index, items.length - 1);
  renderMain();
}

async function once(action) {
  if (busy) return;
  busy = true;
  try { await action(); } finally { busy = false; }
}

function answerPerson(index, yes) {
  return once(async () => {
    const item = items[index];
    const body = {name: current.name, yes: yes ? item.faces : [], no: yes ? [] : item.faces};
    await settle(index, await send("/api/suggestions/answer", body));
  });
}

function yesToAll() {
  return once(async () => {
    if (!items.length) return;
    const faces = items.flatMap(i => i.faces);
    if (await send("/api/suggestions/answer", {name: current.name, yes: faces})) {
      items = [];
      await load();
    }
  });
}

function answerPair(index, name) {
  return once(async () => {
    const item = items[index];
    const ok = name === null
      ? await send("/api/suggestions/answer", {not_same: item.pair})
      : await send("/api/merge", {source: item.groups[0], target: item.groups[1], name});
    await settle(index, ok);
  });
}

async function load() {
  const response = await fetch("/api/suggestions");
  const reply = await response.json();
  if (!response.ok) {
    showError(reply.error);
    document.getElementById("main").replaceChildren(el("p", {text: reply.error}));
    return;
  }
  data = reply;
  document.getElementById("known-names").replaceChildren(
    ...data.people.map(p => el("option", {value: p.name})));
  // Stay on the queue in hand while it has suggestions; else the first one there is.
  if (!current || !queueOf(current) || !queueOf(current).total) {
    current = data.people.length ? {kind: "person", name: data.people[0].name}
            : data.same_person.total ? {kind: "pairs"} : null;
  }
  if (current) select(current); else { renderQueues(); renderMain(); }
  document.body.dataset.loaded = "1";
}

document.addEventListener("keydown", (event) => {
  if (!current || event.target.closest("input, select, textarea") || event.ctrlKey || event.metaKey || event.altKey) return;
  const key = event.key;
  if (key === "ArrowDown" || key === "j") setFocus(focus + 1);
  else if (key === "ArrowUp" || key === "k") setFocus(focus - 1);
  else if (key === "Y" && current.kind === "person") yesToAll();
  else if (key === "y" && items.length) {
    if (current.kind === "person") answerPerson(focus, true);
    else document.querySelectorAll("#main .item")[focus].querySelector("input").focus();
  } else if (key === "n" && items.length) {
    if (current.kind === "person") answerPerson(focus, false); else answerPair(focus, null);
  } else return;
  event.preventDefault();
});
load();
</script>
</body>
</html>
"""
)
