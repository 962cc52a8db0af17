// Side panels (Memories, Usage, and any panel added later): one open at a time, beside the chat on
// a wide screen and over it on a phone, each with a Close button; Escape closes too.
//
// A panel is an <aside class="panel" id="X"> with a .panel-close button, opened by any button with
// data-panel="X"; register(X, loader) gives it a loader that runs each time it opens.
import { $, api, el, setStatus } from "./api.js";

const loaders = new Map();
let opener = null; // the button that opened the current panel: focus goes back to it

export function registerPanel(id, loader) { loaders.set(id, loader); }

export function openPanel(id, from = null) {
  for (const panel of document.querySelectorAll(".panel")) if (panel.id !== id) panel.hidden = true;
  const panel = $(id);
  panel.hidden = false;
  opener = from;
  syncButtons();
  panel.querySelector(".panel-close").focus();
  const load = loaders.get(id);
  if (load) load().catch((err) => setStatus(err.message, true));
}

export function closePanels() {
  const open = document.querySelector(".panel:not([hidden])");
  for (const panel of document.querySelectorAll(".panel")) panel.hidden = true;
  syncButtons();
  if (open && opener && opener.offsetParent !== null) opener.focus();
  else if (open) $("message-input").focus();
  opener = null;
}

export function openPanelId() {
  const open = document.querySelector(".panel:not([hidden])");
  return open ? open.id : null;
}

function syncButtons() {
  for (const button of document.querySelectorAll("[data-panel]")) {
    button.setAttribute("aria-expanded", String(!$(button.dataset.panel).hidden));
  }
  document.body.classList.toggle("panel-open", openPanelId() !== null);
}

export function reloadOpenPanel() {
  const id = openPanelId();
  const load = id && loaders.get(id);
  return load ? load() : Promise.resolve();
}

export function wirePanels(beforeOpen = () => {}) {
  for (const button of document.querySelectorAll("[data-panel]")) {
    button.addEventListener("click", () => {
      beforeOpen();
      if ($(button.dataset.panel).hidden) openPanel(button.dataset.panel, button);
      else closePanels();
    });
  }
  for (const close of document.querySelectorAll(".panel-close")) close.addEventListener("click", closePanels);
  document.addEventListener("keydown", (ev) => {
    if (ev.key === "Escape" && openPanelId() && !document.querySelector("dialog[open]")) closePanels();
  });
}

// -- memories --------------------------------------------------------------------------------------

function when(ms) {
  const d = new Date(ms);
  return d.toLocaleDateString(undefined, { year: "numeric", month: "short", day: "numeric" });
}

export async function loadMemories() {
  const data = await api("GET", "/api/memories?limit=200");
  $("memory-list").replaceChildren(...data.items.map((m) => el("li", { class: "memory" },
    el("p", { class: "memory-text" }, m.content),
    el("p", { class: "memory-meta" },
      el("span", { class: "memory-kind" }, m.kind || "note"), " · ",
      el("time", { datetime: new Date(m.created_at).toISOString() }, when(m.created_at)), " · ",
      el("span", { class: "memory-id" }, `id ${m.id}`)),
    el("button", { type: "button", class: "danger", "aria-label": `Forget: ${m.content}`,
      onclick: () => forget(m.id) }, "Forget"))));
  $("no-memories").hidden = data.items.length > 0;
}

async function forget(id) {
  try { await api("DELETE", `/api/memories/${id}`); await loadMemories(); setStatus("Forgotten."); }
  catch (err) { setStatus(err.message, true); }
}
