// hero-agent web page: plain JavaScript modules, no framework, no build step.
// Talks to the REST API and reads the /api/chat SSE stream with fetch + ReadableStream.
import { $, api, askToken, el, headers, readEvents, setStatus, state } from "./api.js";

// -- contexts ------------------------------------------------------------------------------------

async function loadContexts() {
  const data = await api("GET", "/api/contexts");
  if (!state.context) state.context = data.default;
  const known = new Set(data.contexts);
  known.add(state.context);
  $("context-list").replaceChildren(...[...known].sort().map((name) => el("option", { value: name })));
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
  setStatus(`Context: ${name}`);
  await refreshAll();
}

// -- conversations -------------------------------------------------------------------------------

async function loadConversations(selectActive = false) {
  const archived = $("show-archived").checked ? "all" : "false";
  const data = await api("GET", `/api/conversations?limit=200&archived=${archived}`);
  state.conversations = data.items;
  if (selectActive && !state.conversationId) {
    // the page remembers its own selection per context; the user's active conversation otherwise
    const remembered = localStorage.getItem(`hero.conversation.${state.context}`);
    const known = data.items.some((c) => c.id === remembered);
    state.conversationId = known ? remembered : data.active_id;
  }
  renderConversations();
}

function rememberSelection() {
  const key = `hero.conversation.${state.context}`;
  if (state.conversationId) localStorage.setItem(key, state.conversationId);
  else localStorage.removeItem(key);
}

function renderConversations() {
  rememberSelection();
  const list = $("conversation-list");
  list.replaceChildren(...state.conversations.map(conversationItem));
  $("no-conversations").hidden = state.conversations.length > 0;
  const current = state.conversations.find((c) => c.id === state.conversationId);
  $("conversation-title").textContent = current ? current.title || "Untitled" : "New conversation";
}

function conversationItem(conv) {
  const selected = conv.id === state.conversationId;
  const title = el("button", {
    type: "button", class: "conversation-title", "aria-current": selected ? "true" : "false",
    onclick: () => selectConversation(conv.id),
  }, conv.title || "Untitled");
  const actions = el("span", { class: "conversation-actions" },
    el("button", { type: "button", "aria-label": `Rename ${conv.title || "Untitled"}`, title: "Rename",
      onclick: () => startRename(item, conv) }, "Rename"),
    el("button", { type: "button", "aria-label": `${conv.is_archived ? "Unarchive" : "Archive"} ${conv.title || "Untitled"}`,
      onclick: () => patchConversation(conv.id, { is_archived: !conv.is_archived }) },
      conv.is_archived ? "Unarchive" : "Archive"),
    el("button", { type: "button", class: "danger", "aria-label": `Delete ${conv.title || "Untitled"}`,
      onclick: () => deleteConversation(conv) }, "Delete"));
  const item = el("li", { class: `conversation${selected ? " selected" : ""}${conv.is_archived ? " archived" : ""}`,
    "data-id": conv.id }, title, actions);
  return item;
}

function startRename(item, conv) {
  const input = el("input", { type: "text", "aria-label": "New title", maxlength: "200", class: "rename-input" });
  input.value = conv.title;
  const finish = async (save) => {
    if (save && input.value.trim() && input.value !== conv.title) {
      await patchConversation(conv.id, { title: input.value.trim() });
    } else {
      renderConversations();
    }
  };
  input.addEventListener("keydown", (ev) => {
    if (ev.key === "Enter") { ev.preventDefault(); finish(true); }
    if (ev.key === "Escape") { ev.preventDefault(); finish(false); }
  });
  input.addEventListener("blur", () => finish(true), { once: true });
  item.replaceChildren(input);
  input.focus();
  input.select();
}

async function patchConversation(id, changes) {
  try {
    await api("PATCH", `/api/conversations/${id}`, changes);
    await loadConversations();
  } catch (err) { setStatus(err.message, true); }
}

async function deleteConversation(conv) {
  if (!window.confirm(`Delete "${conv.title || "Untitled"}" and all its messages? This cannot be undone.`)) return;
  try {
    await api("DELETE", `/api/conversations/${conv.id}`);
    if (state.conversationId === conv.id) {
      state.conversationId = null;
      renderMessages([]);
    }
    await loadConversations();
    setStatus("Conversation deleted.");
  } catch (err) { setStatus(err.message, true); }
}

const narrow = window.matchMedia("(max-width: 700px)");

function setSidebar(open) {
  document.body.classList.toggle("sidebar-closed", !open);
  $("toggle-sidebar").setAttribute("aria-expanded", String(open));
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
    renderMessages([]);
    $("message-input").focus();
  } catch (err) { setStatus(err.message, true); }
}

// -- messages ------------------------------------------------------------------------------------

async function loadMessages() {
  if (state.streaming) return; // never replace the bubbles of a reply that is still streaming
  if (!state.conversationId) { renderMessages([]); return; }
  try {
    const data = await api("GET", `/api/conversations/${state.conversationId}/messages?limit=200`);
    renderMessages(data.items);
  } catch (err) {
    if (err.status === 404) { state.conversationId = null; renderMessages([]); }
    else setStatus(err.message, true);
  }
}

function renderMessages(items) {
  const shown = [];
  for (const m of items) {
    if (m.role === "user") shown.push(bubble("user", m.content, m));
    else if (m.role === "assistant" && m.tool_calls.length && !m.content) {
      // a tool round: show it as tool activity, like the live stream does
      const b = bubble("assistant", "", m);
      b.classList.add("tool-round");
      for (const call of m.tool_calls) b.querySelector(".tools").append(el("div", { class: "tool ok" }, `⚙ ${call.name}`));
      shown.push(b);
    } else if (m.role === "assistant") shown.push(bubble("assistant", m.content, m));
  }
  $("messages").replaceChildren(...shown);
  document.body.dataset.loaded = state.conversationId || "none";
  scrollDown();
}

function bubble(role, text, { archived = false, status = "complete", channel = "" } = {}) {
  // the stored message fields (archived, status, channel) double as the options
  const classes = ["message", role];
  if (archived) classes.push("archived");
  if (status !== "complete") classes.push(status);
  const meta = [role === "user" ? "You" : role === "assistant" ? "Agent" : role];
  if (channel && channel !== "web") meta.push(`via ${channel}`);
  if (status === "interrupted") meta.push("interrupted");
  if (archived) meta.push("cleared");
  return el("li", { class: classes.join(" ") },
    el("div", { class: "meta" }, meta.join(" · ")),
    el("div", { class: "tools" }),
    el("div", { class: "text" }, text));
}

function scrollDown() {
  const list = $("messages");
  list.scrollTop = list.scrollHeight;
}

// -- chat over SSE -------------------------------------------------------------------------------

async function send(text) {
  const body = { message: text, context_name: state.context };
  if (state.conversationId) body.conversation_id = state.conversationId;
  // the same rule as the agent's: "/cmd" or "/cmd args" is a command, "/usr/bin x" is a message
  const isCommand = /^\/[A-Za-z][A-Za-z0-9_]*(@\w+)?(\s|$)/.test(text);
  if (!isCommand) $("messages").append(bubble("user", text));
  const reply = isCommand ? null : bubble("assistant", "");
  if (reply) { $("messages").append(reply); scrollDown(); }
  const controller = new AbortController();
  state.streaming = controller;
  $("stop").hidden = false;
  $("send").disabled = true;
  setStatus(isCommand ? "" : "Thinking…");
  try {
    const res = await fetch("/api/chat", { method: "POST", headers: headers(), body: JSON.stringify(body),
      signal: controller.signal });
    if (!res.ok) {
      const err = (await res.json().catch(() => ({}))).error || {};
      if (res.status === 401) askToken();
      throw new Error(err.message || `HTTP ${res.status}`);
    }
    await readEvents(res, (event, data) => onEvent(event, data, reply));
  } catch (err) {
    if (err.name === "AbortError") setStatus("Stopped.");
    else setStatus(err.message, true);
    if (reply) reply.classList.add("interrupted");
  } finally {
    state.streaming = null;
    $("stop").hidden = true;
    $("send").disabled = false;
  }
}

async function onEvent(event, data, reply) {
  const text = reply && reply.querySelector(".text");
  switch (event) {
    case "start":
      state.conversationId = data.conversation_id;
      break;
    case "delta":
      text.textContent += data.text;
      setStatus("");
      scrollDown();
      break;
    case "tool_start":
      reply.querySelector(".tools").append(el("div", { class: "tool running", "data-call": data.call_id },
        `⚙ ${data.name} …`));
      break;
    case "tool_end": {
      const line = reply.querySelector(`.tool[data-call="${CSS.escape(data.call_id)}"]`);
      if (line) {
        line.className = `tool ${data.ok ? "ok" : "failed"}`;
        line.textContent = `⚙ ${data.name} ${data.ok ? "✓" : "✗"} ${data.summary || ""}`.trim();
      }
      break;
    }
    case "done":
      if (!text.textContent) text.textContent = data.text;
      setStatus("");
      await loadConversations();
      break;
    case "error":
      if (reply) { reply.classList.add("error"); reply.querySelector(".meta").textContent += ` · ${data.message}`; }
      setStatus(data.message, true);
      await loadConversations();
      break;
    case "command":
      await onCommand(data);
      break;
    default:
      break;
  }
}

async function onCommand(data) {
  if (data.data && typeof data.data.context === "string" && data.data.context !== state.context) {
    await switchContext(data.data.context);
  } else if (data.conversation_id) {
    state.conversationId = data.conversation_id;
    await loadConversations();
    await loadMessages();
  } else {
    await loadConversations(true);
  }
  $("messages").append(el("li", { class: `message command${data.ok ? "" : " error"}` },
    el("div", { class: "meta" }, `/${data.command}`), el("div", { class: "text" }, data.text)));
  scrollDown();
}

// -- memories ------------------------------------------------------------------------------------

async function loadMemories() {
  const data = await api("GET", "/api/memories?limit=200");
  $("memory-list").replaceChildren(...data.items.map((m) => el("li", { class: "memory" },
    el("span", {}, m.content),
    el("button", { type: "button", class: "danger", "aria-label": `Forget: ${m.content}`,
      onclick: () => forget(m.id) }, "Forget"))));
  $("no-memories").hidden = data.items.length > 0;
}

async function forget(id) {
  try { await api("DELETE", `/api/memories/${id}`); await loadMemories(); }
  catch (err) { setStatus(err.message, true); }
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

// -- wiring --------------------------------------------------------------------------------------

async function refreshAll() {
  try {
    await loadContexts();
    await loadConversations(true);
    await loadMessages();
    if (!$("memories").hidden) await loadMemories();
  } catch (err) {
    setStatus(err.message, err.status !== 401);
  }
}

function wire() {
  $("composer").addEventListener("submit", (ev) => {
    ev.preventDefault();
    const input = $("message-input");
    const text = input.value.trim();
    if (state.streaming) {
      setStatus("A reply is still streaming: wait for it, or press Stop.");
      return;
    }
    if (!text) return;
    input.value = "";
    send(text);
  });
  $("message-input").addEventListener("keydown", (ev) => {
    if (ev.key === "Enter" && !ev.shiftKey && !ev.isComposing) {
      ev.preventDefault();
      $("composer").requestSubmit();
    }
  });
  $("stop").addEventListener("click", () => state.streaming && state.streaming.abort());
  $("new-conversation").addEventListener("click", newConversation);
  $("show-archived").addEventListener("change", () => loadConversations());
  $("clear-conversation").addEventListener("click", async () => {
    if (!state.conversationId) return;
    try { await api("POST", `/api/conversations/${state.conversationId}/clear`); await loadMessages(); setStatus("Cleared."); }
    catch (err) { setStatus(err.message, true); }
  });
  $("context-form").addEventListener("submit", (ev) => {
    ev.preventDefault();
    switchContext($("context-input").value.trim());
  });
  $("show-memories").addEventListener("click", async () => {
    const panel = $("memories");
    panel.hidden = !panel.hidden;
    $("show-memories").setAttribute("aria-expanded", String(!panel.hidden));
    if (!panel.hidden) await loadMemories().catch((err) => setStatus(err.message, true));
  });
  $("toggle-sidebar").addEventListener("click", () => setSidebar(document.body.classList.contains("sidebar-closed")));
  $("show-token").addEventListener("click", askToken);
  $("link-telegram").addEventListener("click", approvePairing);
  $("token-form").addEventListener("submit", () => {
    state.token = $("token-input").value.trim();
    localStorage.setItem("hero.token", state.token);
    $("token-input").value = "";
    refreshAll();
  });
  $("token-forget").addEventListener("click", () => {
    state.token = "";
    localStorage.removeItem("hero.token");
    $("token-dialog").close();
    refreshAll();
  });
  $("show-token").hidden = !state.token;
  if (narrow.matches) setSidebar(false);
}

wire();
refreshAll();
