// Sending a message and reading its reply stream (POST /api/chat, server-sent events), Stop, Retry,
// Regenerate, Edit and slash commands.
import { $, ApiError, el, errorOf, headers, readEvents, request, setStatus, state } from "./api.js";
import { clearPending, hasPending, pendingImages, pendingPreviews } from "./attachments.js";
import {
  clearFailure, collapse, finishTool, openEditor, replyBubble, setUserText, showFailure, toolBlock, turnActions,
  updateMeta, userBubble,
} from "./messages.js";

// what the rest of the page does after a turn (set by app.js)
const host = {
  reloadConversations: async () => {},
  reloadMessages: async () => {},
  switchContext: async () => {},
  showModel: () => {},
};

export function configureChat(callbacks) { Object.assign(host, callbacks); }

// the same rule as the agent's: "/cmd" or "/cmd args" is a command, "/usr/bin x" is a message
const COMMAND_RE = /^\/[A-Za-z][A-Za-z0-9_]*(@\w+)?(\s|$)/;

export function scrollDown(force = false) {
  const log = $("message-log");
  const near = log.scrollHeight - log.scrollTop - log.clientHeight < 120;
  if (force || near) log.scrollTop = log.scrollHeight;
}

function busy(on) {
  $("send").disabled = on;
  $("stop").hidden = !on;
}

const postJson = (body) => (signal) =>
  request("/api/chat", { method: "POST", headers: headers(), body: JSON.stringify(body), signal });

// Send the composer's text and images. Both stay in the composer until the server has stored the
// message (the `start` event): a message that never reached the server can be sent again as it is.
export async function send(text) {
  const body = { message: text, context_name: state.context };
  if (state.conversationId) body.conversation_id = state.conversationId;
  const images = hasPending();
  if (!images && COMMAND_RE.test(text)) { await runCommand(body); return; }
  if (images) body.images = pendingImages();
  const user = userBubble(text, { images: pendingPreviews() });
  user.classList.add("pending");
  const reply = replyBubble();
  $("messages").append(user, reply);
  scrollDown(true);
  const turn = await stream(postJson(body), reply, (data) => {
    user.dataset.id = data.user_message_id;
    user.classList.remove("pending");
    const input = $("message-input");
    if (input.value.trim() === text) input.value = "";
    if (images) clearPending();
  });
  if (!turn.started) { user.remove(); reply.remove(); } else turnActions(user, reply, lastTurnActions);
}

// Edit and Regenerate of the last turn (messages.js draws the buttons)
export const lastTurnActions = {
  onEdit: (userLi, replyLi) => openEditor(userLi, (text) => editTurn(userLi, replyLi, text)),
  onRegenerate: (userLi, replyLi) => regenerateTurn(userLi, replyLi),
};

function userBubbleOf(id) {
  return document.querySelector(`#messages > li.message.user[data-id="${CSS.escape(id)}"]`);
}

/**
 * Regenerate the last reply: POST /api/chat with `{"regenerate_of": userMessageId, "conversation_id":
 * ...}`. The server answers the stored user message again; the replaced reply stays stored, marked
 * superseded, and is shown collapsed above the new one.
 */
export async function regenerateTurn(userLi, oldReply) {
  if (state.streaming) { setStatus("A reply is still streaming: wait for it, or press Stop."); return; }
  const body = { regenerate_of: userLi.dataset.id, conversation_id: state.conversationId, context_name: state.context };
  const reply = replyBubble();
  oldReply.after(reply);
  const turn = await stream(postJson(body), reply, () => collapse(oldReply));
  if (!turn.started) { reply.remove(); setStatus(`Regenerate failed: ${turn.error}`, true); }
  else turnActions(userLi, reply, lastTurnActions);
}

/**
 * Edit and resend the last user message: POST /api/chat with `{"edit_of": userMessageId, "message":
 * text, "conversation_id": ...}`: a new turn; the earlier message and its reply stay stored, marked
 * superseded, and are shown collapsed.
 */
export async function editTurn(oldUser, oldReply, text) {
  if (state.streaming) { setStatus("A reply is still streaming: wait for it, or press Stop."); return; }
  const body = { edit_of: oldUser.dataset.id, message: text, conversation_id: state.conversationId,
    context_name: state.context };
  const user = userBubble(text);
  user.classList.add("pending");
  const reply = replyBubble();
  $("messages").append(user, reply);
  scrollDown(true);
  const turn = await stream(postJson(body), reply, (data) => {
    user.dataset.id = data.user_message_id;
    user.classList.remove("pending");
    collapse(...[oldUser, oldReply].filter((b) => b && b.isConnected));
  });
  if (!turn.started) { user.remove(); reply.remove(); setStatus(`Edit not sent: ${turn.error}`, true); }
  else turnActions(user, reply, lastTurnActions);
}

/**
 * Send a recorded voice message: POST /api/voice/chat (multipart: the audio as `audio`, plus
 * `conversation_id` and `context_name`). The answer is the stream of /api/chat with a `transcript`
 * event right after `start`: the transcript becomes the user's bubble.
 */
export async function sendVoice(audio) {
  const form = new FormData();
  const type = (audio.type || "audio/webm").split(";")[0];
  form.append("audio", audio, `voice.${type.split("/")[1] || "webm"}`);
  form.append("context_name", state.context);
  if (state.conversationId) form.append("conversation_id", state.conversationId);
  const user = userBubble("🎤 …", { spoken: true });
  user.classList.add("pending");
  const reply = replyBubble();
  $("messages").append(user, reply);
  scrollDown(true);
  setStatus("Transcribing…");
  const post = (signal) => request("/api/voice/chat", { method: "POST", headers: headers(false), body: form, signal });
  const turn = await stream(post, reply, (data) => {
    user.dataset.id = data.user_message_id;
    user.classList.remove("pending");
  }, (data) => setUserText(user, data.text, data.duration_s));
  if (!turn.started) { user.remove(); reply.remove(); } else turnActions(user, reply, lastTurnActions);
}

/**
 * Retry a failed turn: ask the server to answer the stored user message `userMessageId` of
 * `conversationId` again. One documented call: POST /api/chat with
 * `{"retry_of": userMessageId, "conversation_id": conversationId, "context_name": ...}`; the answer
 * is the usual event stream. The server answers the stored message (no second copy of it is
 * stored); the failed reply stays stored, marked, and is not sent to the model again. The new reply
 * is shown under the failed one; if the server refuses, the failed reply says why.
 */
export async function retryTurn(conversationId, userMessageId, failedReply) {
  if (state.streaming) { setStatus("A reply is still streaming: wait for it, or press Stop."); return; }
  const body = { retry_of: userMessageId, conversation_id: conversationId, context_name: state.context };
  const reply = replyBubble();
  failedReply.after(reply);
  const turn = await stream(postJson(body), reply, () => {
    clearFailure(failedReply);
    updateMeta(failedReply, { status: "failed, retried below" });
    collapse(failedReply);
  });
  if (!turn.started) {
    reply.remove();
    showFailure(failedReply, `Retry failed: ${turn.error}`, () => retryTurn(conversationId, userMessageId, failedReply));
  } else {
    turnActions(userBubbleOf(userMessageId), reply, lastTurnActions);
  }
}

// Run one chat request (`post(signal)`: /api/chat or /api/voice/chat) into `reply`; onStart(data)
// runs when the server has the message, onTranscript(data) on a voice message's transcript.
// Answers what happened: {started, ended, error, conversationId, userMessageId}.
async function stream(post, reply, onStart, onTranscript = () => {}) {
  const controller = new AbortController();
  const turn = { started: false, ended: false, error: "", conversationId: state.conversationId, userMessageId: null, onTranscript };
  state.streaming = controller;
  state.turns += 1;
  busy(true);
  setStatus("Thinking…");
  reply.setAttribute("aria-busy", "true");
  try {
    const res = await post(controller.signal);
    if (!res.ok) throw await errorOf(res);
    await readEvents(res, (event, data) => onEvent(event, data, reply, turn, onStart));
    if (!turn.ended) throw new ApiError(0, "cut", "The reply ended without a result.");
  } catch (err) {
    reply.md.finish();
    const stopped = err.name === "AbortError";
    turn.error = stopped ? "Stopped." : err.message;
    if (!turn.started) {
      // the server does not have the message: the text is still in the composer
      setStatus(stopped ? "Stopped; the message was not sent." : `Not sent: ${err.message}`, !stopped);
    } else if (stopped) {
      reply.classList.add("interrupted");
      updateMeta(reply, { status: "stopped" });
      setStatus("Stopped.");
    } else {
      failTurn(reply, turn, err.message);
    }
  } finally {
    reply.removeAttribute("aria-busy");
    state.streaming = null;
    busy(false);
  }
  return turn;
}

function failTurn(reply, turn, message) {
  updateMeta(reply, { status: "failed" });
  const retry = turn.userMessageId ? () => retryTurn(turn.conversationId, turn.userMessageId, reply) : null;
  showFailure(reply, message, retry);
  setStatus(message, true);
}

async function onEvent(event, data, reply, turn, onStart) {
  switch (event) {
    case "start":
      turn.started = true;
      turn.userMessageId = data.user_message_id;
      turn.conversationId = data.conversation_id;
      state.conversationId = data.conversation_id;
      onStart(data);
      break;
    case "transcript":
      turn.onTranscript(data);
      setStatus("Thinking…");
      break;
    case "delta":
      reply.md.append(data.text);
      setStatus("");
      scrollDown();
      break;
    case "tool_start":
      toolBlock(reply, data.call_id, data.name, data.arguments);
      break;
    case "tool_end":
      finishTool(reply, data.call_id, { ok: data.ok, summary: data.summary, durationMs: data.duration_ms });
      break;
    case "usage":
      if (data.model) { updateMeta(reply, { model: data.model }); host.showModel(data.model); }
      break;
    case "done":
      turn.ended = true;
      if (!reply.md.text && data.text) reply.md.set(data.text);
      else reply.md.finish();
      setStatus("");
      scrollDown();
      await host.reloadConversations();
      break;
    case "error":
      turn.ended = true;
      reply.md.finish();
      failTurn(reply, turn, data.message);
      await host.reloadConversations();
      break;
    default:
      break;
  }
}

// A slash command answers one `command` event; its card is shown until the page reloads (commands
// are not part of the conversation: docs/web.md).
async function runCommand(body) {
  const controller = new AbortController();
  state.streaming = controller;
  state.turns += 1;
  busy(true);
  let answer = null;
  try {
    const res = await request("/api/chat", { method: "POST", headers: headers(), body: JSON.stringify(body),
      signal: controller.signal });
    if (!res.ok) throw await errorOf(res);
    await readEvents(res, (event, data) => {
      if (event === "command") answer = data;
      else if (event === "error") setStatus(data.message, true);
    });
  } catch (err) {
    setStatus(err.name === "AbortError" ? "Stopped." : `Not sent: ${err.message}`, err.name !== "AbortError");
  } finally {
    state.streaming = null;
    busy(false);
  }
  if (answer) {
    $("message-input").value = "";
    await onCommand(answer);
  }
}

async function onCommand(data) {
  if (data.data && typeof data.data.context === "string" && data.data.context !== state.context) {
    await host.switchContext(data.data.context);
  } else if (data.conversation_id) {
    state.conversationId = data.conversation_id;
    await host.reloadConversations();
    await host.reloadMessages();
  } else {
    await host.reloadConversations(true);
  }
  $("messages").append(el("li", { class: `message command${data.ok ? "" : " error"}` },
    el("div", { class: "meta" }, `/${data.command}`), el("div", { class: "text plain" }, data.text)));
  scrollDown(true);
}
