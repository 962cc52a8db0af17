// Shared helpers of the hero-agent page: state, DOM building, the JSON API client, reachability of
// the server, SSE reading.

export const $ = (id) => document.getElementById(id);
export const state = {
  token: localStorage.getItem("hero.token") || "",
  context: localStorage.getItem("hero.context") || "",
  conversationId: null,
  conversations: [],
  streaming: null, // AbortController of the running /api/chat request
  turns: 0, // chat requests started by this page: a history fetched before one is stale
};

export function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (value === undefined || value === null || value === false) continue;
    if (key === "class") node.className = value;
    else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else node.setAttribute(key, value === true ? "" : value);
  }
  for (const child of children) if (child !== null && child !== undefined) node.append(child);
  return node;
}

export function setStatus(text, isError = false) {
  const status = $("status");
  status.textContent = text;
  status.classList.toggle("error", isError);
}

export function headers(json = true) {
  const h = {};
  if (json) h["Content-Type"] = "application/json";
  if (state.token) h.Authorization = `Bearer ${state.token}`;
  if (state.context) h["X-Hero-Context"] = state.context;
  return h;
}

export class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

// -- reachability --------------------------------------------------------------------------------
// A fetch that fails at the network level (daemon stopped, connection refused) shows one banner,
// "the server is not reachable", and polls /healthz until the server answers again; then the page
// reloads its data by itself (onReconnect, set by app.js).

export const UNREACHABLE = "The server is not reachable.";
const POLL_MS = [1000, 2000, 3000, 5000];
let offline = false;
let onReconnect = () => {};

export function setReconnectHandler(fn) { onReconnect = fn; }

export function isOffline() { return offline; }

function markOffline() {
  if (offline) return;
  offline = true;
  $("offline").hidden = false;
  document.body.dataset.reachable = "false";
  poll(0);
}

async function poll(attempt) {
  await new Promise((resolve) => setTimeout(resolve, POLL_MS[Math.min(attempt, POLL_MS.length - 1)]));
  try {
    const res = await fetch("/healthz", { cache: "no-store" });
    if (res.ok) { markOnline(); return; }
  } catch { /* still down */ }
  poll(attempt + 1);
}

function markOnline() {
  if (!offline) return;
  offline = false;
  $("offline").hidden = true;
  document.body.dataset.reachable = "true";
  setStatus("");
  onReconnect();
}

// fetch, with a network failure turned into ApiError(0, "unreachable") and the banner shown
export async function request(path, init) {
  try {
    return await fetch(path, init);
  } catch (err) {
    if (err.name === "AbortError") throw err;
    markOffline();
    throw new ApiError(0, "unreachable", UNREACHABLE);
  }
}

export async function errorOf(res) {
  const err = (await res.json().catch(() => ({}))).error || {};
  if (res.status === 401) askToken(state.token ? "That token was not accepted." : "");
  return new ApiError(res.status, err.code || "error", err.message || `HTTP ${res.status}`);
}

export async function api(method, path, body) {
  const res = await request(path, {
    method,
    headers: headers(body !== undefined),
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  if (res.status === 204) return null;
  if (!res.ok) throw await errorOf(res);
  return res.json();
}

// The token dialog: its error is shown inside the dialog (the page behind a modal dialog is inert).
export function askToken(error = "") {
  $("show-token").hidden = false;
  const dialog = $("token-dialog");
  const message = $("token-error");
  message.textContent = error;
  message.hidden = !error;
  if (!dialog.open) dialog.showModal();
  $("token-input").focus();
}

// -- server-sent events over fetch ----------------------------------------------------------------

function parseBlock(block) {
  let event = "message";
  const data = [];
  for (const line of block.split("\n")) {
    if (line.startsWith(":")) continue; // keep-alive comment
    if (line.startsWith("event:")) event = line.slice(6).trim();
    else if (line.startsWith("data:")) data.push(line.slice(5).replace(/^ /, ""));
  }
  return data.length ? { event, data: JSON.parse(data.join("\n")) } : null;
}

// Read an SSE response body to its end, calling onEvent(name, data) for each event in order. A
// connection cut mid-stream is an ApiError "unreachable" (and shows the banner).
export async function readEvents(res, onEvent) {
  const reader = res.body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  for (;;) {
    let chunk;
    try {
      chunk = await reader.read();
    } catch (err) {
      if (err.name === "AbortError") throw err;
      markOffline();
      throw new ApiError(0, "unreachable", `${UNREACHABLE} The reply was cut off.`);
    }
    if (chunk.done) return;
    buffer += chunk.value;
    let cut;
    while ((cut = buffer.indexOf("\n\n")) >= 0) {
      const parsed = parseBlock(buffer.slice(0, cut));
      buffer = buffer.slice(cut + 2);
      if (parsed) await onEvent(parsed.event, parsed.data);
    }
  }
}
