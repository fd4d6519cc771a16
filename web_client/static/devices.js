// Cameras and microphones: opening them (with the user's saved choice), naming what went
// wrong, listing devices, a microphone level meter, and the document sources.

import { t } from "/static/i18n.js";
import { el } from "/static/ui.js";

const CAMERA = { width: { ideal: 640 }, height: { ideal: 360 }, frameRate: { ideal: 15, max: 24 } };
// A document camera is read at its full resolution; stills are taken from it.
const DOCUMENT = { width: { ideal: 1920 }, height: { ideal: 1080 }, frameRate: { ideal: 10, max: 15 } };

export function savedDevice(kind) {
  return localStorage.getItem(`jr.device.${kind}`) || "";
}

export function saveDevice(kind, id) {
  localStorage.setItem(`jr.device.${kind}`, id || "");
}

function constraint(base, deviceId) {
  if (base === false) return false;
  return deviceId ? { ...base, deviceId: { exact: deviceId } } : { ...base };
}

// Open camera and/or microphone; a saved device that is gone falls back to the default.
export async function openLocal({ video = true, audio = true } = {}) {
  const audioBase = { echoCancellation: true, noiseSuppression: true, autoGainControl: true };
  const ask = (useSaved) =>
    navigator.mediaDevices.getUserMedia({
      video: video ? constraint(CAMERA, useSaved ? savedDevice("camera") : "") : false,
      audio: audio ? constraint(audioBase, useSaved ? savedDevice("microphone") : "") : false,
    });
  try {
    return await ask(true);
  } catch (err) {
    if (err.name === "OverconstrainedError" || err.name === "NotFoundError") {
      if (savedDevice("camera") || savedDevice("microphone")) return ask(false);
    }
    throw err;
  }
}

export async function openCamera(deviceId) {
  const stream = await navigator.mediaDevices.getUserMedia({ video: constraint(CAMERA, deviceId), audio: false });
  return stream.getVideoTracks()[0];
}

export async function openMicrophone(deviceId) {
  const stream = await navigator.mediaDevices.getUserMedia({ audio: constraint({}, deviceId), video: false });
  return stream.getAudioTracks()[0];
}

export async function openDocumentCamera(deviceId) {
  const stream = await navigator.mediaDevices.getUserMedia({ video: constraint(DOCUMENT, deviceId), audio: false });
  return stream.getVideoTracks()[0];
}

export async function openScreen() {
  const stream = await navigator.mediaDevices.getDisplayMedia({ video: { frameRate: { ideal: 5, max: 15 } }, audio: false });
  return stream.getVideoTracks()[0];
}

// "denied" | "missing" | "busy" | "other": what the user should be told.
export function mediaErrorKind(err) {
  switch (err?.name) {
    case "NotAllowedError":
    case "SecurityError":
      return "denied";
    case "NotFoundError":
    case "OverconstrainedError":
      return "missing";
    case "NotReadableError":
    case "AbortError":
      return "busy";
    default:
      return navigator.mediaDevices ? "other" : "missing";
  }
}

export async function listDevices() {
  const all = await navigator.mediaDevices.enumerateDevices();
  return {
    cameras: all.filter((d) => d.kind === "videoinput" && d.deviceId),
    microphones: all.filter((d) => d.kind === "audioinput" && d.deviceId),
  };
}

// The camera and microphone <select>s filled with the devices there are (unnamed ones
// numbered), the ones in use chosen.
export async function fillDeviceSelects(cameraSelect, micSelect, cameraId, micId) {
  const { cameras, microphones } = await listDevices().catch(() => ({ cameras: [], microphones: [] }));
  const fill = (select, list, kind, current) => {
    select.replaceChildren(...list.map((d, i) => el("option", { value: d.deviceId, text: d.label || t(`check.${kind}_n`, { n: i + 1 }) })));
    if (current) select.value = current;
    select.disabled = !list.length;
  };
  fill(cameraSelect, cameras, "camera", cameraId);
  fill(micSelect, microphones, "microphone", micId);
}

// A live level meter for a microphone track, drawn into `bar` (a role="meter" element).
// Web Audio may only start after a user gesture: the meter waits for one if it must.
export class MicMeter {
  constructor(bar) {
    this.bar = bar;
    this.ctx = null;
    this.timer = null;
    this.source = null;
  }

  attach(track) {
    this.detach();
    if (!track) return;
    this.track = track;
    try {
      this.ctx = this.ctx || new AudioContext();
    } catch {
      return;
    }
    if (this.ctx.state === "running") {
      this.run();
      return;
    }
    // Suspended until the user interacts with the page (the browser's autoplay rule).
    const start = () => {
      this.ctx.resume().then(() => this.run(), () => {});
      document.removeEventListener("pointerdown", start, true);
      document.removeEventListener("keydown", start, true);
    };
    this.gesture = start;
    document.addEventListener("pointerdown", start, true);
    document.addEventListener("keydown", start, true);
  }

  run() {
    if (!this.track || this.timer) return;
    this.source = this.ctx.createMediaStreamSource(new MediaStream([this.track]));
    const analyser = this.ctx.createAnalyser();
    analyser.fftSize = 512;
    this.source.connect(analyser);
    const data = new Float32Array(analyser.fftSize);
    this.timer = setInterval(() => {
      analyser.getFloatTimeDomainData(data);
      let sum = 0;
      for (const v of data) sum += v * v;
      const level = Math.min(1, Math.sqrt(sum / data.length) * 4);
      this.bar.style.setProperty("--level", level.toFixed(3));
      this.bar.setAttribute("aria-valuenow", String(Math.round(level * 100)));
      this.bar.dataset.active = level > 0.02 ? "1" : "0";
    }, 100);
  }

  detach() {
    clearInterval(this.timer);
    this.timer = null;
    this.source?.disconnect();
    this.source = null;
    this.track = null;
    if (this.gesture) {
      document.removeEventListener("pointerdown", this.gesture, true);
      document.removeEventListener("keydown", this.gesture, true);
    }
    this.bar.style.setProperty("--level", "0");
  }
}

export function stopTracks(stream) {
  for (const track of stream?.getTracks?.() || []) track.stop();
}
