// The conversation as the page shows it: one bubble per user message, one reply bubble per turn
// (its tool calls as collapsible blocks, its text as Markdown, a failure with its reason and Retry),
// earlier attempts replaced by a retry, regenerate or edit collapsed, Edit and Regenerate on the last turn.
// The same builders serve the live stream and the stored history, so a reload shows what the
// stream showed.
import { el } from "./api.js";
import { StreamingMarkdown } from "./markdown.js";

const SUMMARY_CHARS = 200; // the server's tool_end summary: whitespace collapsed, at most 200 chars
const NO_REPLY = /^\[no reply: ([^\]]*)\]\s*/;

// A user bubble. `images`: [{url, name, width?, height?}] shown under the text (a stored image's url
// is its signed same-origin /api/attachments link; a pending one's is its data: URL). `spoken`: the
// text is a voice message's transcript (`duration` in seconds, when known).
export function userBubble(text, { archived = false, channel = "", id = "", images = [], spoken = false, duration = 0 } = {}) {
  const li = el("li", { class: `message user${archived ? " archived" : ""}`, "data-id": id || null },
    el("div", { class: "meta" }),
    el("div", { class: "text plain" }, text));
  li.info = { channel, archived, spoken, duration };
  userMeta(li);
  if (images.length) {
    li.append(el("div", { class: "images" }, ...images.map((img) => el("img", {
      src: img.url, alt: img.name || "image", loading: "lazy", width: img.width || null, height: img.height || null }))));
  }
  return li;
}

function userMeta(li) {
  const { channel, archived, spoken, duration } = li.info;
  const meta = ["You"];
  if (spoken) meta.push(duration ? `🎤 spoken, ${duration.toFixed(1)} s` : "🎤 spoken");
  if (channel && channel !== "web") meta.push(`via ${channel}`);
  if (archived) meta.push("cleared");
  li.querySelector(".meta").textContent = meta.join(" · ");
}

// A voice message's transcript arrived: it is the user's message.
export function setUserText(li, text, duration = 0) {
  li.querySelector(".text").textContent = text;
  Object.assign(li.info, { spoken: true, duration });
  userMeta(li);
}

// A stored message's `attachments` as userBubble options.
function mediaOf(message) {
  const items = message.attachments || [];
  const voice = items.find((a) => a.kind === "voice");
  return {
    images: items.filter((a) => a.kind === "image" && a.url),
    spoken: Boolean(voice),
    duration: voice ? Number(voice.duration_s) || 0 : 0,
  };
}

// A reply bubble; `reply.md` renders its text, `reply.tools` holds its tool blocks.
export function replyBubble({ archived = false, channel = "", model = "" } = {}) {
  const text = el("div", { class: "text markdown" });
  const li = el("li", { class: `message assistant${archived ? " archived" : ""}` },
    el("div", { class: "meta" }), el("div", { class: "tools" }), text);
  li.md = new StreamingMarkdown(text);
  li.info = { channel, model, archived, status: "" };
  updateMeta(li);
  return li;
}

export function updateMeta(li, changes = {}) {
  Object.assign(li.info, changes);
  const { channel, model, archived, status } = li.info;
  const meta = ["Agent"];
  if (model) meta.push(model);
  if (channel && channel !== "web") meta.push(`via ${channel}`);
  if (status) meta.push(status);
  if (archived) meta.push("cleared");
  li.querySelector(".meta").textContent = meta.join(" · ");
}

// -- tool blocks -------------------------------------------------------------------------------

export function summarize(content) {
  const line = String(content || "").split(/\s+/).filter(Boolean).join(" ");
  return line.length <= SUMMARY_CHARS ? line : `${line.slice(0, SUMMARY_CHARS - 1)}…`;
}

function prettyArguments(raw) {
  try { return JSON.stringify(JSON.parse(raw || "{}"), null, 2); } catch { return String(raw || ""); }
}

function duration(ms) {
  if (typeof ms !== "number") return "";
  return ms < 1000 ? `${Math.round(ms)} ms` : `${(ms / 1000).toFixed(1)} s`;
}

export function toolBlock(li, callId, name, args) {
  const block = el("details", { class: "tool-block running", "data-call": callId },
    el("summary", {}, el("span", { class: "tool-name" }, `⚙ ${name}`), " ",
      el("span", { class: "tool-state" }, "running…")),
    el("div", { class: "tool-body" },
      el("div", { class: "tool-label" }, "Arguments"),
      el("pre", { class: "tool-args", tabindex: "0" }, prettyArguments(args)),
      el("div", { class: "tool-label" }, "Result"),
      el("pre", { class: "tool-result", tabindex: "0" }, "…")));
  li.querySelector(".tools").append(block);
  return block;
}

export function finishTool(li, callId, { ok, summary, durationMs }) {
  const block = li.querySelector(`.tool-block[data-call="${CSS.escape(callId)}"]`);
  if (!block) return;
  block.classList.remove("running");
  block.classList.add(ok ? "ok" : "failed");
  const took = duration(durationMs);
  block.querySelector(".tool-state").textContent = `${ok ? "ok" : "failed"}${took ? ` · ${took}` : ""}`;
  block.querySelector(".tool-result").textContent = summary || "(empty)";
}

// -- failures ----------------------------------------------------------------------------------

// Show why the turn failed, with a Retry button when `retry` is given (the newest turn only).
export function showFailure(li, reason, retry) {
  li.classList.add("failed");
  let box = li.querySelector(".failure");
  if (!box) {
    box = el("div", { class: "failure" });
    li.append(box);
  }
  const children = [el("span", { class: "failure-reason" }, `⚠ ${reason}`)];
  if (retry) {
    children.push(el("button", { type: "button", class: "retry", onclick: retry,
      "aria-label": `Retry: ${reason}` }, "Retry"));
  }
  box.replaceChildren(...children);
}

export function clearFailure(li) {
  li.classList.remove("failed");
  const box = li.querySelector(".failure");
  if (box) box.remove();
}

// -- stored history ----------------------------------------------------------------------------

// Group stored messages into turns: a user message and everything after it up to the next one.
function turnsOf(items) {
  const turns = [];
  for (const m of items) {
    if (m.role === "user") turns.push({ user: m, rest: [] });
    else if (turns.length) turns[turns.length - 1].rest.push(m);
    else turns.push({ user: null, rest: [m] }); // a window that starts mid-turn
  }
  return turns;
}

// -- replaced attempts and the last turn's actions ----------------------------------------------

// Messages replaced by a retry, regenerate or edit (their `superseded_by` is set): kept and shown,
// collapsed under one "Replaced attempt" disclosure, never sent to the model again (docs/web.md).
export function supersededGroup(...bubbles) {
  for (const b of bubbles) b.classList.add("superseded");
  return el("li", { class: "superseded-group" },
    el("details", {}, el("summary", {}, "Replaced attempt"), el("ol", { class: "messages" }, ...bubbles)));
}

// Move live bubbles into a "Replaced attempt" group where the first of them stood.
export function collapse(...bubbles) {
  const group = supersededGroup();
  bubbles[0].before(group);
  group.querySelector("ol").append(...bubbles);
  for (const b of bubbles) b.classList.add("superseded");
  return group;
}

// Edit (on the last user bubble) and Regenerate (on its reply, when that completed): the only
// turn the server can re-run is the last one, so any earlier buttons are removed first.
// actions: { onEdit(userLi, replyLi), onRegenerate(userLi, replyLi) }
export function turnActions(userLi, replyLi, actions) {
  for (const old of document.querySelectorAll("#messages .turn-actions")) old.remove();
  addActions(userLi, replyLi, actions);
}

function addActions(userLi, replyLi, actions) {
  if (!userLi || !userLi.dataset.id || !actions) return;
  userLi.append(el("div", { class: "turn-actions" },
    el("button", { type: "button", class: "edit", "aria-label": "Edit your last message",
      onclick: () => actions.onEdit(userLi, replyLi) }, "Edit")));
  if (replyLi && !replyLi.classList.contains("failed")) {
    replyLi.append(el("div", { class: "turn-actions" },
      el("button", { type: "button", class: "regenerate", "aria-label": "Regenerate the last reply",
        onclick: () => actions.onRegenerate(userLi, replyLi) }, "Regenerate")));
  }
}

// The inline editor of the last user message: Enter or "Ask again" runs the edit, Escape or "Cancel"
// gives the bubble back. onSend(text) runs the edit.
export function openEditor(userLi, onSend) {
  const textEl = userLi.querySelector(".text");
  const box = el("textarea", { class: "edit-input", rows: "3", "aria-label": "Edit your message" });
  box.value = textEl.textContent;
  const close = () => { form.remove(); textEl.hidden = false; userLi.querySelector(".turn-actions").hidden = false; };
  const submit = () => { const text = box.value; if (text.trim()) { close(); onSend(text); } };
  box.addEventListener("keydown", (e) => {
    if (e.key === "Enter" && !e.shiftKey) { e.preventDefault(); submit(); }
    else if (e.key === "Escape") { e.preventDefault(); close(); userLi.querySelector("button.edit").focus(); }
  });
  const form = el("div", { class: "editor" }, box,
    el("div", { class: "editor-buttons" },
      el("button", { type: "button", onclick: submit }, "Ask again"),
      el("button", { type: "button", onclick: close }, "Cancel")));
  textEl.hidden = true;
  userLi.querySelector(".turn-actions").hidden = true;
  textEl.after(form);
  box.focus();
}

// -- stored history ----------------------------------------------------------------------------

// The stored history as bubbles. onRetry(userMessage, replyBubble) makes the Retry button of the
// newest turn when that turn has no complete answer; actions (see turnActions) its Edit and
// Regenerate. Superseded messages are grouped, collapsed, where they stood.
export function renderHistory(items, onRetry, actions) {
  const out = [];
  const turns = turnsOf(items.filter((m) => m.role !== "system"));
  const lastCurrent = turns.findLastIndex((t) => !(t.user && t.user.superseded_by));
  let lastUser = null;
  let lastReply = null;
  turns.forEach((turn, i) => {
    const userLi = turn.user ? userBubble(turn.user.content,
      { archived: turn.user.archived, channel: turn.user.channel, id: turn.user.id, ...mediaOf(turn.user) }) : null;
    if (turn.user && turn.user.superseded_by) {
      const old = storedReply(turn);
      out.push(supersededGroup(...[userLi, old].filter(Boolean)));
      return;
    }
    if (userLi) out.push(userLi);
    const replaced = turn.rest.filter((m) => m.superseded_by);
    if (replaced.length) {
      const old = storedReply({ user: turn.user, rest: replaced });
      if (old) { if (old.failure) showFailure(old, old.failure, null); out.push(supersededGroup(old)); }
    }
    const current = { user: turn.user, rest: turn.rest.filter((m) => !m.superseded_by) };
    const li = storedReply(current);
    if (!li) return;
    const last = i === lastCurrent;
    if (li.failure) {
      const retry = last && turn.user && onRetry ? () => onRetry(turn.user, li) : null;
      showFailure(li, li.failure, retry);
    }
    if (last) { lastUser = userLi; lastReply = li; }
    out.push(li);
  });
  if (lastUser) addActions(lastUser, lastReply, actions);
  return out;
}

function storedReply(turn) {
  const archived = turn.user ? turn.user.archived : turn.rest.some((m) => m.archived);
  const first = turn.rest[0];
  const li = replyBubble({ archived, channel: first ? first.channel : "" });
  const texts = [];
  let answered = false;
  let failure = "";
  for (const m of turn.rest) {
    if (m.role === "assistant") {
      if (m.model) updateMeta(li, { model: m.model });
      for (const call of m.tool_calls || []) toolBlock(li, call.id, call.name, call.arguments);
      let content = m.content || "";
      if (m.status === "complete") {
        if (!(m.tool_calls || []).length) answered = true;
      } else {
        const marker = NO_REPLY.exec(content);
        if (marker) content = content.slice(marker[0].length);
        failure = marker ? marker[1] : m.status === "interrupted" ? "The reply was interrupted." : "The reply failed.";
        updateMeta(li, { status: m.status });
      }
      if (content.trim()) texts.push(content);
    } else if (m.role === "tool") {
      finishTool(li, m.tool_call_id, { ok: m.status === "complete", summary: summarize(m.content), durationMs: m.duration_ms });
    }
  }
  if (!turn.rest.length && !turn.user) return null;
  for (const block of li.querySelectorAll(".tool-block.running")) {
    finishTool(li, block.dataset.call, { ok: false, summary: "No result was recorded (the turn was cut off)." });
  }
  li.md.set(texts.join("\n\n"));
  if (!answered && turn.user) li.failure = failure || "No reply was stored for this message.";
  else if (failure) li.failure = failure;
  return li;
}
