// Images in the composer: the Attach button (a file picker), paste into the message box, and drag
// and drop onto the composer. Each image is checked here against the server's caps (GET /api/media:
// type, size, count), read as a data: URL -- the form /api/chat's `images` takes, and one the page's
// `img-src 'self' data:` policy shows as a preview without any blob: URL -- and listed with a Remove
// button until the message is sent. The server checks everything again (the bytes decide the type).
import { $, el, setStatus } from "./api.js";

export const limits = {
  images: true,
  max_image_bytes: 5 * 1024 * 1024,
  max_images: 4,
  image_types: ["image/png", "image/jpeg", "image/gif", "image/webp"],
  voice: false,
  max_audio_bytes: 20 * 1024 * 1024,
  max_audio_seconds: 600,
};

let pending = []; // [{name, size, dataUrl}]

export function sizeText(bytes) {
  if (bytes < 1024) return `${bytes} B`;
  if (bytes < 1024 * 1024) return `${Math.round(bytes / 1024)} KB`;
  return `${(bytes / (1024 * 1024)).toFixed(bytes % (1024 * 1024) ? 1 : 0)} MB`;
}

export function applyLimits(data) {
  Object.assign(limits, data);
  $("attach").hidden = !limits.images;
  $("image-input").accept = limits.image_types.join(",");
  showCaps();
}

export function showCaps() {
  const caps = [];
  if (limits.images) caps.push(`Images: up to ${limits.max_images}, ${sizeText(limits.max_image_bytes)} each`);
  if (limits.voice) caps.push(`voice: up to ${Math.round(limits.max_audio_seconds / 60)} min`);
  const extra = $("media-caps").dataset.extra || "";
  $("media-caps").textContent = [caps.join("; "), extra].filter(Boolean).join(". ");
}

export function hasPending() { return pending.length > 0; }

// the `images` field of /api/chat
export function pendingImages() { return pending.map((p) => ({ data_url: p.dataUrl, name: p.name })); }

export function pendingPreviews() { return pending.map((p) => ({ url: p.dataUrl, name: p.name })); }

export function clearPending() {
  pending = [];
  render();
}

function readAsDataUrl(file) {
  return new Promise((resolve, reject) => {
    const reader = new FileReader();
    reader.onload = () => resolve(String(reader.result));
    reader.onerror = () => reject(reader.error);
    reader.readAsDataURL(file);
  });
}

// Add image files (from the picker, a paste or a drop); the ones that break a cap are refused with
// one line in the status, the others are added.
export async function addFiles(files) {
  if (!limits.images) { setStatus("Images are not enabled on this server.", true); return; }
  const problems = [];
  for (const file of files) {
    if (!limits.image_types.includes(file.type)) {
      problems.push(`${file.name || "the file"} is not a PNG, JPEG, GIF or WebP image`);
    } else if (file.size > limits.max_image_bytes) {
      problems.push(`${file.name || "the image"} is ${sizeText(file.size)}, the limit is ${sizeText(limits.max_image_bytes)}`);
    } else if (pending.length >= limits.max_images) {
      problems.push(`at most ${limits.max_images} images per message`);
      break;
    } else {
      const name = file.name && file.name !== "image.png" ? file.name : `pasted-${pending.length + 1}.${file.type.split("/")[1]}`;
      pending.push({ name, size: file.size, dataUrl: await readAsDataUrl(file) });
    }
  }
  render();
  setStatus(problems.length ? `Not attached: ${problems.join("; ")}.` : "", problems.length > 0);
}

function remove(index) {
  const name = pending[index].name;
  pending.splice(index, 1);
  render();
  setStatus(`Removed ${name}.`);
  $("message-input").focus();
}

function render() {
  const list = $("pending-images");
  list.replaceChildren(...pending.map((p, i) => el("li", { class: "pending-image" },
    el("img", { src: p.dataUrl, alt: p.name }),
    el("span", { class: "pending-name" }, `${p.name} · ${sizeText(p.size)}`),
    el("button", { type: "button", class: "remove-image", "aria-label": `Remove ${p.name}`, onclick: () => remove(i) }, "✕"))));
  list.hidden = pending.length === 0;
}

function imageFiles(dataTransfer) {
  return [...(dataTransfer ? dataTransfer.files : [])].filter((f) => f.type.startsWith("image/"));
}

export function wireAttachments() {
  $("attach").addEventListener("click", () => $("image-input").click());
  $("image-input").addEventListener("change", async (ev) => {
    await addFiles([...ev.target.files]);
    ev.target.value = ""; // the same file may be chosen again after a Remove
  });
  $("message-input").addEventListener("paste", (ev) => {
    const files = imageFiles(ev.clipboardData);
    if (!files.length) return; // plain text pastes as usual
    ev.preventDefault();
    addFiles(files);
  });
  const composer = $("composer");
  composer.addEventListener("dragover", (ev) => {
    if (![...ev.dataTransfer.types].includes("Files")) return;
    ev.preventDefault();
    composer.classList.add("dropping");
  });
  composer.addEventListener("dragleave", () => composer.classList.remove("dropping"));
  composer.addEventListener("drop", (ev) => {
    composer.classList.remove("dropping");
    const files = [...ev.dataTransfer.files]; // not only images: anything else gets a clear "not attached"
    if (!files.length) return;
    ev.preventDefault();
    addFiles(files);
  });
}
