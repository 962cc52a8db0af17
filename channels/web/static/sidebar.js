// The conversation sidebar: list, search, New, Show archived, and a menu per conversation (Rename,
// Archive / Unarchive, Delete).
import { $, api, el, setStatus, state } from "./api.js";

const host = { selectConversation: async () => {}, showEmpty: () => {} };
export function configureSidebar(callbacks) { Object.assign(host, callbacks); }

const SEARCH_DELAY_MS = 250;
let searchTimer = null;

export async function loadConversations(selectActive = false) {
  const params = new URLSearchParams({ limit: "200", archived: $("show-archived").checked ? "all" : "false" });
  const query = $("conversation-search").value.trim();
  if (query) params.set("q", query);
  const data = await api("GET", `/api/conversations?${params}`);
  state.conversations = data.items;
  if (selectActive && !state.conversationId) {
    // the page remembers its own selection per context; the user's active conversation otherwise
    const remembered = localStorage.getItem(`hero.conversation.${state.context}`);
    const known = data.items.some((c) => c.id === remembered);
    state.conversationId = known ? remembered : data.active_id;
  }
  renderConversations(query);
}

function rememberSelection() {
  const key = `hero.conversation.${state.context}`;
  if (state.conversationId) localStorage.setItem(key, state.conversationId);
  else localStorage.removeItem(key);
}

export function renderConversations(query = $("conversation-search").value.trim()) {
  rememberSelection();
  $("conversation-list").replaceChildren(...state.conversations.map(conversationItem));
  const empty = $("no-conversations");
  empty.hidden = state.conversations.length > 0;
  empty.textContent = query ? `No conversation title matches "${query}".` : "No conversations yet.";
  const current = state.conversations.find((c) => c.id === state.conversationId);
  if (current || !state.conversationId) {
    $("conversation-title").textContent = current ? current.title || "Untitled" : "New conversation";
  }
}

function conversationItem(conv) {
  const selected = conv.id === state.conversationId;
  const name = conv.title || "Untitled";
  const title = el("button", {
    type: "button", class: "conversation-title", "aria-current": selected ? "true" : null,
    onclick: () => host.selectConversation(conv.id),
  }, name);
  const menuButton = el("button", {
    type: "button", class: "item-menu-button", "aria-haspopup": "menu", "aria-expanded": "false",
    "aria-label": `Actions for ${name}`, title: "Rename, archive or delete",
  }, "⋯");
  const item = el("li", { class: `conversation${selected ? " selected" : ""}${conv.is_archived ? " archived" : ""}`,
    "data-id": conv.id }, title, menuButton);
  menuButton.addEventListener("click", () => toggleMenu(item, menuButton, conv));
  return item;
}

// -- the per-item menu (a small ARIA menu: arrows move, Escape closes) ---------------------------

function closeMenus(except = null) {
  for (const menu of document.querySelectorAll(".item-menu")) {
    if (menu === except) continue;
    const button = menu.parentElement.querySelector(".item-menu-button");
    if (button) button.setAttribute("aria-expanded", "false");
    menu.remove();
  }
}

function toggleMenu(item, button, conv) {
  const open = item.querySelector(".item-menu");
  closeMenus();
  if (open) return;
  const name = conv.title || "Untitled";
  const entry = (label, action, extra = "") => el("button", {
    type: "button", role: "menuitem", class: `item-menu-entry ${extra}`.trim(), tabindex: "-1",
    onclick: () => { closeMenus(); action(); },
  }, label);
  const menu = el("div", { class: "item-menu", role: "menu", "aria-label": `Actions for ${name}` },
    entry("Rename", () => startRename(item, conv)),
    entry(conv.is_archived ? "Unarchive" : "Archive", () => patchConversation(conv.id, { is_archived: !conv.is_archived })),
    entry("Delete", () => deleteConversation(conv), "danger"));
  menu.addEventListener("keydown", (ev) => menuKeys(ev, menu, button));
  item.append(menu);
  button.setAttribute("aria-expanded", "true");
  menu.querySelector("[role=menuitem]").focus();
}

function menuKeys(ev, menu, button) {
  const entries = [...menu.querySelectorAll("[role=menuitem]")];
  const at = entries.indexOf(document.activeElement);
  if (ev.key === "ArrowDown" || ev.key === "ArrowUp") {
    ev.preventDefault();
    const step = ev.key === "ArrowDown" ? 1 : -1;
    entries[(at + step + entries.length) % entries.length].focus();
  } else if (ev.key === "Home" || ev.key === "End") {
    ev.preventDefault();
    entries[ev.key === "Home" ? 0 : entries.length - 1].focus();
  } else if (ev.key === "Escape" || ev.key === "Tab") {
    if (ev.key === "Escape") ev.preventDefault();
    closeMenus();
    button.focus();
  }
}

document.addEventListener("click", (ev) => {
  if (!ev.target.closest(".item-menu, .item-menu-button")) closeMenus();
});

function startRename(item, conv) {
  const input = el("input", { type: "text", "aria-label": "New title", maxlength: "200", class: "rename-input" });
  input.value = conv.title;
  let done = false;
  const finish = async (save) => {
    if (done) return;
    done = true;
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
  input.addEventListener("blur", () => finish(true));
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
      host.showEmpty();
    }
    await loadConversations();
    setStatus("Conversation deleted.");
  } catch (err) { setStatus(err.message, true); }
}

export function wireSidebar() {
  $("show-archived").addEventListener("change", () => loadConversations().catch((err) => setStatus(err.message, true)));
  $("conversation-search").addEventListener("input", () => {
    clearTimeout(searchTimer);
    searchTimer = setTimeout(() => loadConversations().catch((err) => setStatus(err.message, true)), SEARCH_DELAY_MS);
  });
  $("conversation-search").addEventListener("keydown", (ev) => {
    if (ev.key === "Escape" && ev.target.value) { ev.target.value = ""; loadConversations(); }
  });
}
