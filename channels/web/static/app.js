// hero-agent web page: plain JavaScript modules, no framework, no build step.
// app.js wires the parts: api.js (client, reachability, SSE), chat.js (sending, Stop, Retry),
// messages.js (bubbles, tool blocks, failures), markdown.js (rendering), sidebar.js (conversations),
// panels.js (Memories and other side panels), usage.js (charts), attachments.js (images in the
// composer), voice.js (the microphone).
import { $, api, askToken, isOffline, setReconnectHandler, setStatus, state } from "./api.js";
import { applyLimits, hasPending, wireAttachments } from "./attachments.js";
import { configureChat, lastTurnActions, retryTurn, scrollDown, send } from "./chat.js";
import { renderHistory } from "./messages.js";
import { closePanels, loadMemories, registerPanel, reloadOpenPanel, wirePanels } from "./panels.js";
import { configureSidebar, loadConversations, renderConversations, wireSidebar } from "./sidebar.js";
import { loadUsage } from "./usage.js";
import { applyVoiceLimits, wireVoice } from "./voice.js";

const narrow = window.matchMedia("(max-width: 700px)");

// -- contexts ------------------------------------------------------------------------------------

async function loadContexts() {
  const data = await api("GET", "/api/contexts");
  if (!state.context) state.context = data.default;
  const known = new Set(data.contexts);
  known.add(state.context);
  $("context-list").replaceChildren(...[...known].sort().map((name) => {
    const option = document.createElement("option");
    option.value = name;
    return option;
  }));
  $("context-input").value = state.context;
}

async function switchContext(name) {
  if (!/^[a-z0-9][a-z0-9_-]{0,63}$/.test(name)) {
    setStatus("Invalid context name: use a-z, 0-9, _ and -.", true);
    return;
  }
  state.context = name;
  localStorage.setItem("hero.context", name);
  state.conversationId = null;
  $("context-input").value = name;
  setHeaderMenu(false);
  setStatus(`Context: ${name}`);
  await refreshAll();
}

// -- conversation shown --------------------------------------------------------------------------

function setSidebar(open) {
  document.body.classList.toggle("sidebar-closed", !open);
  $("toggle-sidebar").setAttribute("aria-expanded", String(open));
}

function setHeaderMenu(open) {
  document.body.classList.toggle("header-menu-open", open);
  $("header-menu-button").setAttribute("aria-expanded", String(open));
}

function showModel(model) {
  $("model-name").textContent = model || "";
  $("model-name").hidden = !model;
}

async function selectConversation(id) {
  state.conversationId = id;
  if (narrow.matches) setSidebar(false); // on a phone the list overlays the chat
  renderConversations();
  await loadMessages();
  $("message-input").focus();
}

async function newConversation() {
  try {
    const conv = await api("POST", "/api/conversations", {});
    state.conversationId = conv.id;
    await loadConversations();
    showMessages([]);
    $("message-input").focus();
  } catch (err) { setStatus(err.message, true); }
}

// Never replace the bubbles of a reply that is streaming, nor draw a history fetched before a turn
// started (sent while the fetch was on its way, e.g. right after a reconnect) or for a conversation
// no longer shown: that history lacks the turn. Each finished load counts in data-loads.
async function loadMessages() {
  if (state.streaming) return;
  if (!state.conversationId) { showMessages([]); return; }
  const { conversationId, turns } = state;
  try {
    const data = await api("GET", `/api/conversations/${conversationId}/messages?limit=200`);
    const stale = state.streaming || state.turns !== turns || state.conversationId !== conversationId;
    if (!stale) showMessages(data.items);
  } catch (err) {
    if (err.status === 404 && state.conversationId === conversationId) { state.conversationId = null; showMessages([]); }
    else setStatus(err.message, true);
  } finally {
    document.body.dataset.loads = String(Number(document.body.dataset.loads || 0) + 1);
  }
}

function showMessages(items) {
  const conversationId = state.conversationId;
  const onRetry = (user, reply) => retryTurn(conversationId, user.id, reply);
  $("messages").replaceChildren(...renderHistory(items, onRetry, lastTurnActions));
  const models = items.filter((m) => m.role === "assistant" && m.model);
  showModel(models.length ? models[models.length - 1].model : "");
  document.body.dataset.loaded = state.conversationId || "none";
  scrollDown(true);
}

// -- Telegram pairing ----------------------------------------------------------------------------

async function approvePairing() {
  const code = (window.prompt("The pairing code the bot gave the Telegram user:") || "").trim();
  if (!code) return;
  try {
    const link = await api("POST", "/api/pairing/approve", { code });
    setStatus(`Linked Telegram id ${link.telegram_id} to you (${link.user}).`);
  } catch (err) {
    setStatus(err.message, true);
  }
}

// -- loading everything --------------------------------------------------------------------------

async function loadMediaLimits() {
  applyLimits(await api("GET", "/api/media"));
  applyVoiceLimits();
}

async function refreshAll() {
  try {
    await loadMediaLimits();
    await loadContexts();
    await loadConversations(true);
    await loadMessages();
    await reloadOpenPanel();
  } catch (err) {
    if (err.status !== 401 && !isOffline()) setStatus(err.message, true);
  }
}

// -- the token dialog ----------------------------------------------------------------------------

async function saveToken(ev) {
  ev.preventDefault();
  const token = $("token-input").value.trim();
  if (!token) return;
  const previous = state.token;
  state.token = token;
  try {
    await api("GET", "/api/contexts"); // a wrong token answers 401: the dialog says so and stays
  } catch (err) {
    if (err.status === 401) { state.token = previous; askToken("That token was not accepted."); return; }
    askToken(err.message);
    state.token = previous;
    return;
  }
  localStorage.setItem("hero.token", token);
  $("token-input").value = "";
  $("token-dialog").close();
  $("show-token").hidden = false;
  await refreshAll();
}

// -- wiring --------------------------------------------------------------------------------------

function wireComposer() {
  $("composer").addEventListener("submit", (ev) => {
    ev.preventDefault();
    const text = $("message-input").value.trim();
    if (state.streaming) {
      setStatus("A reply is still streaming: wait for it, or press Stop.");
      return;
    }
    if (text || hasPending()) send(text);
  });
  $("message-input").addEventListener("keydown", (ev) => {
    if (ev.key === "Enter" && !ev.shiftKey && !ev.isComposing) {
      ev.preventDefault();
      $("composer").requestSubmit();
    }
  });
  $("stop").addEventListener("click", () => state.streaming && state.streaming.abort());
  $("clear-conversation").addEventListener("click", async () => {
    if (!state.conversationId) return;
    try { await api("POST", `/api/conversations/${state.conversationId}/clear`); await loadMessages(); setStatus("Cleared."); }
    catch (err) { setStatus(err.message, true); }
  });
}

function wireHeader() {
  $("context-form").addEventListener("submit", (ev) => {
    ev.preventDefault();
    switchContext($("context-input").value.trim());
  });
  $("toggle-sidebar").addEventListener("click", () => setSidebar(document.body.classList.contains("sidebar-closed")));
  $("link-telegram").addEventListener("click", approvePairing);
  $("header-menu-button").addEventListener("click", () => setHeaderMenu(!document.body.classList.contains("header-menu-open")));
  document.addEventListener("keydown", (ev) => {
    if (ev.key === "Escape" && document.body.classList.contains("header-menu-open")) {
      setHeaderMenu(false);
      $("header-menu-button").focus();
    }
  });
  $("new-conversation").addEventListener("click", newConversation);
  $("show-token").addEventListener("click", () => { setHeaderMenu(false); askToken(); });
  $("token-form").addEventListener("submit", saveToken);
  $("token-cancel").addEventListener("click", () => $("token-dialog").close());
  $("token-forget").addEventListener("click", () => {
    state.token = "";
    localStorage.removeItem("hero.token");
    $("token-dialog").close();
    refreshAll();
  });
  $("show-token").hidden = !state.token;
  $("usage-days").addEventListener("change", () => loadUsage().catch((err) => setStatus(err.message, true)));
}

function wire() {
  configureChat({ reloadConversations: loadConversations, reloadMessages: loadMessages, switchContext, showModel });
  configureSidebar({ selectConversation, showEmpty: () => showMessages([]) });
  registerPanel("memories", loadMemories);
  registerPanel("usage", loadUsage);
  wirePanels(() => setHeaderMenu(false));
  wireSidebar();
  wireComposer();
  wireAttachments();
  wireVoice();
  applyVoiceLimits();
  wireHeader();
  setReconnectHandler(refreshAll);
  if (narrow.matches) setSidebar(false);
  narrow.addEventListener("change", () => { setSidebar(!narrow.matches); setHeaderMenu(false); closePanels(); });
  showModel("");
}

wire();
refreshAll();
