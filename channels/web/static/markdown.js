// Markdown for assistant messages: markdown-it renders, highlight.js colours code, DOMPurify
// sanitizes, then the DOM is finished here (links open in a new tab, remote images become links,
// code blocks get a Copy button). Model output is untrusted: it can never run script, submit a form
// or load anything (see docs/web.md, "Markdown and sanitizing"). User messages stay plain text.
import markdownit from "./vendor/markdown-it.min.js";
import DOMPurify from "./vendor/purify.es.js";
import hljs from "./vendor/highlight.min.js";
import { el } from "./api.js";

// html: false -> raw HTML in the Markdown is shown as text; markdown-it's own link check already
// refuses javascript:, vbscript:, file: and non-image data: URLs (DOMPurify and the hooks below check
// again: no single layer is trusted alone)
const md = markdownit({ html: false, linkify: true, typographer: false, highlight });

function highlight(code, lang) {
  const name = (lang || "").trim().split(/\s+/)[0].toLowerCase();
  if (!name || !hljs.getLanguage(name)) return ""; // markdown-it escapes it as plain code
  try {
    return hljs.highlight(code, { language: name, ignoreIllegals: true }).value;
  } catch {
    return "";
  }
}

const ALLOWED_TAGS = [
  "p", "br", "hr", "h1", "h2", "h3", "h4", "h5", "h6", "blockquote", "ul", "ol", "li",
  "strong", "em", "del", "s", "code", "pre", "span", "a", "img",
  "table", "thead", "tbody", "tr", "th", "td", "sup", "sub",
];
const ALLOWED_ATTR = ["href", "title", "alt", "src", "class", "start"];
const SAFE_LINK = /^(https?:|mailto:)/i;
const SAFE_IMAGE = /^data:image\/(png|gif|jpeg|webp);base64,/i;

// markdown-it aligns table cells with style="text-align:..."; the page's CSP refuses inline styles
// (even while DOMPurify parses them), so the alignment becomes a class before any HTML is made
md.core.ruler.push("align_as_class", (mdState) => {
  for (const token of mdState.tokens) {
    if (token.type !== "th_open" && token.type !== "td_open") continue;
    const align = /text-align:\s*(left|right|center)/.exec(token.attrGet("style") || "");
    token.attrs = (token.attrs || []).filter(([name]) => name !== "style");
    if (align) token.attrSet("class", `align-${align[1]}`);
  }
});

// runs inside DOMPurify's inert document, before anything reaches the page's document: a remote
// image never gets the chance to load
DOMPurify.addHook("afterSanitizeAttributes", (node) => {
  if (node.nodeName === "A") {
    const href = node.getAttribute("href") || "";
    if (SAFE_LINK.test(href)) {
      node.setAttribute("target", "_blank");
      node.setAttribute("rel", "noopener noreferrer");
    } else {
      node.removeAttribute("href");
    }
  } else if (node.nodeName === "IMG") {
    const src = node.getAttribute("src") || "";
    if (!SAFE_IMAGE.test(src)) {
      node.removeAttribute("src");
      if (SAFE_LINK.test(src)) node.setAttribute("title", src);
      node.setAttribute("class", "blocked-image");
    }
  }
});

const PURIFY = {
  ALLOWED_TAGS,
  ALLOWED_ATTR,
  ALLOW_DATA_ATTR: false,
  ALLOW_ARIA_ATTR: false,
  ALLOW_UNKNOWN_PROTOCOLS: false,
  RETURN_DOM_FRAGMENT: true,
};

// Markdown text -> a sanitized DocumentFragment, ready to insert
export function renderMarkdown(text) {
  const fragment = DOMPurify.sanitize(md.render(text), PURIFY);
  for (const img of fragment.querySelectorAll("img.blocked-image")) img.replaceWith(blockedImage(img));
  for (const pre of fragment.querySelectorAll("pre")) wrap(pre, codeBlock);
  for (const table of fragment.querySelectorAll("table")) {
    // a wide table scrolls sideways inside the message, never the page; the keyboard can scroll it
    wrap(table, (t) => el("div", { class: "table-wrap", tabindex: "0", role: "region", "aria-label": "Table" }, t));
  }
  return fragment;
}

// put node inside the wrapper that make(node) builds, where node was
function wrap(node, make) {
  const parent = node.parentNode;
  const next = node.nextSibling;
  parent.insertBefore(make(node), next);
}

// a remote image is not loaded: it becomes a link the user may choose to open
function blockedImage(img) {
  const alt = img.getAttribute("alt") || "image";
  const url = img.getAttribute("title");
  if (!url) return el("span", { class: "image-note" }, `[image: ${alt}]`);
  return el("a", { href: url, target: "_blank", rel: "noopener noreferrer", class: "image-note",
    title: "Remote images are not loaded; open it in a new tab" }, `[image: ${alt}]`);
}

function codeBlock(pre) {
  const code = pre.querySelector("code");
  const lang = code && /language-([\w+#.-]+)/.exec(code.className);
  const label = lang ? lang[1] : "text";
  if (code && lang) code.classList.add("hljs");
  const button = el("button", { type: "button", class: "copy-code", "aria-label": `Copy ${label} code` }, "Copy");
  button.addEventListener("click", async () => {
    const ok = await copyText((code || pre).textContent);
    button.textContent = ok ? "Copied" : "Copy failed";
    setTimeout(() => { button.textContent = "Copy"; }, 2000);
  });
  pre.setAttribute("tabindex", "0"); // a wide block scrolls; the keyboard must reach it
  return el("div", { class: "code-block" }, el("div", { class: "code-head" }, el("span", {}, label), button), pre);
}

// The Clipboard API needs a secure context (https or localhost); a LAN address over plain http has
// none, so the old way is the fallback: select the text in an off-screen textarea and "copy".
export async function copyText(text) {
  if (navigator.clipboard && window.isSecureContext) {
    try {
      await navigator.clipboard.writeText(text);
      return true;
    } catch { /* denied: try the old way */ }
  }
  const area = el("textarea", { class: "copy-buffer", readonly: true, "aria-hidden": "true", tabindex: "-1" });
  area.value = text;
  const focused = document.activeElement;
  document.body.append(area);
  area.select();
  let ok = false;
  try { ok = document.execCommand("copy"); } catch { ok = false; }
  area.remove();
  if (focused && focused.focus) focused.focus();
  return ok;
}

// Re-renders a growing reply at most every INTERVAL_MS while it streams (a long reply must not be
// parsed again for every delta), and at once when it ends.
export const INTERVAL_MS = 100;

export class StreamingMarkdown {
  constructor(target) {
    this.target = target;
    this.text = "";
    this.timer = null;
    this.last = 0;
  }

  append(piece) {
    this.text += piece;
    if (this.timer !== null) return;
    const wait = Math.max(0, this.last + INTERVAL_MS - performance.now());
    this.timer = setTimeout(() => { this.timer = null; this.render(); }, wait);
  }

  set(text) {
    this.text = text;
    this.finish();
  }

  finish() {
    if (this.timer !== null) { clearTimeout(this.timer); this.timer = null; }
    this.render();
  }

  render() {
    this.last = performance.now();
    this.target.replaceChildren(renderMarkdown(this.text));
    // when this render started (the throttle's clock), for whoever watches the page (the tests)
    this.target.dispatchEvent(
      new CustomEvent("markdown-rendered", { bubbles: true, detail: { started: this.last } }),
    );
  }
}
