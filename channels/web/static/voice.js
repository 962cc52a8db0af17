// The microphone button: record a voice message with MediaRecorder and send it to /api/voice/chat
// (chat.js shows the transcript as the user's bubble). Browsers give the microphone only to secure
// contexts (HTTPS, or http://localhost / 127.0.0.1): elsewhere the button stays hidden and the caps
// line says why. It is hidden as well when the server has no transcription model (GET /api/media).
// A recording stops by a second press, or by itself at the server's length limit.
import { $, setStatus, state } from "./api.js";
import { limits, showCaps } from "./attachments.js";
import { sendVoice } from "./chat.js";

let recorder = null;
let stopTimer = null;

export function canRecord() {
  return window.isSecureContext && Boolean(navigator.mediaDevices && navigator.mediaDevices.getUserMedia)
    && typeof window.MediaRecorder === "function";
}

export function applyVoiceLimits() {
  const button = $("record");
  const possible = canRecord();
  button.hidden = !limits.voice || !possible;
  $("media-caps").dataset.extra = limits.voice && !possible
    ? "Voice input needs a secure connection (HTTPS, or localhost)" : "";
  showCaps();
}

function setRecording(on) {
  const button = $("record");
  button.setAttribute("aria-pressed", String(on));
  button.textContent = on ? "■ Stop recording" : "🎤 Record voice";
  button.classList.toggle("recording", on);
}

async function start() {
  if (state.streaming) { setStatus("A reply is still streaming: wait for it, or press Stop."); return; }
  let stream;
  try {
    stream = await navigator.mediaDevices.getUserMedia({ audio: true });
  } catch (err) {
    setStatus(`The microphone is not available: ${err.message || err.name}`, true);
    return;
  }
  const chunks = [];
  recorder = new MediaRecorder(stream);
  recorder.addEventListener("dataavailable", (ev) => { if (ev.data.size) chunks.push(ev.data); });
  recorder.addEventListener("stop", () => {
    for (const track of stream.getTracks()) track.stop();
    clearTimeout(stopTimer);
    const type = recorder.mimeType || (chunks[0] && chunks[0].type) || "audio/webm";
    recorder = null;
    setRecording(false);
    const audio = new Blob(chunks, { type });
    if (!audio.size) { setStatus("Nothing was recorded.", true); return; }
    if (audio.size > limits.max_audio_bytes) { setStatus("The recording is too large to send.", true); return; }
    sendVoice(audio);
  });
  recorder.start();
  setRecording(true);
  setStatus("Recording… press Stop recording to send.");
  stopTimer = setTimeout(stop, limits.max_audio_seconds * 1000);
}

function stop() {
  if (recorder && recorder.state !== "inactive") recorder.stop();
}

export function wireVoice() {
  $("record").addEventListener("click", () => (recorder ? stop() : start()));
}
