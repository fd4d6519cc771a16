// The local side of the session: camera and microphone (mute, camera on/off, choice of
// device), and what to do when they are missing or denied (audio only, or view only).
import {
  fillDeviceSelects,
  MicMeter,
  mediaErrorKind,
  openCamera,
  openLocal,
  openMicrophone,
  saveDevice,
} from "/static/devices.js";
import { t } from "/static/i18n.js";
import { clear, el } from "/static/ui.js";

function label(button, key, pressed) {
  button.dataset.i18n = key;
  button.textContent = t(key);
  button.setAttribute("aria-pressed", String(pressed));
}

export class LocalMedia {
  constructor({ media, grid, notice }) {
    this.media = media;
    this.grid = grid;
    this.notice = notice; // the stage's notice box (errors, choices)
    this.camera = null;
    this.microphone = null;
    this.mode = "none"; // full | audio | view
    this.mic = document.getElementById("mic");
    this.cam = document.getElementById("cam");
    this.devices = document.getElementById("devices");
    this.panel = document.getElementById("device-panel");
    this.cameraSelect = document.getElementById("camera-select");
    this.micSelect = document.getElementById("mic-select");
    this.meter = new MicMeter(document.getElementById("session-meter"));
    this.mic.addEventListener("click", () => this.toggleMic());
    this.cam.addEventListener("click", () => this.toggleCamera());
    this.devices.addEventListener("click", () => this.togglePanel());
    this.panel.addEventListener("keydown", (ev) => ev.key === "Escape" && this.togglePanel(false));
    this.cameraSelect.addEventListener("change", () => this.switchCamera(this.cameraSelect.value));
    this.micSelect.addEventListener("change", () => this.switchMicrophone(this.micSelect.value));
  }

  cameraId() {
    return this.camera?.getSettings().deviceId || "";
  }

  // Open camera and microphone. If that fails, say why and offer audio only / view only;
  // resolves once the participant has media (or chose to only watch).
  // `preset`: the applicant's pre-join choice (prejoin.js): the previewed stream, or
  // voice only when they declined video.
  async start(preset) {
    if (preset?.stream) {
      this.use(preset.stream, preset.camera ? "full" : "audio");
      preset.stream = null; // published once; a fresh slot opens its own
      return;
    }
    try {
      const voice = preset?.then === "audio_only";
      const stream = await openLocal(voice ? { video: false } : undefined);
      this.use(stream, voice ? "audio" : "full");
      return;
    } catch (err) {
      await this.offerFallback(mediaErrorKind(err), true);
    }
  }

  offerFallback(kind, audioPossible) {
    return new Promise((resolve) => {
      const choose = async (what) => {
        if (what === "audio") {
          try {
            this.use(await openLocal({ video: false }), "audio");
          } catch (err) {
            this.offerFallback(mediaErrorKind(err), false).then(resolve);
            return;
          }
        } else if (what === "retry") {
          this.notice.hidden = true;
          this.start().then(resolve);
          return;
        } else {
          this.use(null, "view");
        }
        this.notice.hidden = true;
        resolve();
      };
      const box = el(
        "div",
        { class: "media-error", testid: "media-error", data: { kind }, attrs: { role: "alert" } },
        el("h2", { i18n: `media.title_${kind}` }),
        el("p", { i18n: `media.error_${kind}` }),
        el(
          "div",
          { class: "media-choices" },
          audioPossible ? el("button", { type: "button", class: "primary", testid: "join-audio-only", i18n: "media.audio_only", on: { click: () => choose("audio") } }) : null,
          el("button", { type: "button", class: audioPossible ? "" : "primary", testid: "join-view-only", i18n: "media.view_only", on: { click: () => choose("view") } }),
          el("button", { type: "button", class: "quiet", testid: "retry-media", i18n: "media.retry", on: { click: () => choose("retry") } }),
        ),
      );
      clear(this.notice).append(box);
      this.notice.hidden = false;
      box.querySelector("button")?.focus();
    });
  }

  use(stream, mode) {
    this.mode = mode;
    this.camera = stream?.getVideoTracks()[0] || null;
    this.microphone = stream?.getAudioTracks()[0] || null;
    document.body.dataset.mediaMode = mode;
    if (this.microphone) this.media.publish("microphone", this.microphone);
    if (this.camera) this.media.publish("camera", this.camera);
    this.grid.setLocal("camera", this.camera);
    this.meter.attach(this.microphone);
    this.mic.disabled = !this.microphone;
    this.cam.disabled = mode === "view";
    label(this.mic, "controls.mute", false);
    label(this.cam, this.camera ? "controls.camera_off" : "controls.camera_on", !this.camera);
    this.fillDevices();
  }

  toggleMic() {
    if (!this.microphone) return;
    this.microphone.enabled = !this.microphone.enabled;
    const muted = !this.microphone.enabled;
    label(this.mic, muted ? "controls.unmute" : "controls.mute", muted);
    document.body.classList.toggle("is-muted", muted);
  }

  async toggleCamera() {
    this.cam.disabled = true;
    try {
      if (this.camera) {
        const old = this.camera;
        this.camera = null;
        this.grid.setLocal("camera", null);
        await this.media.unpublish("camera");
        old.stop();
        label(this.cam, "controls.camera_on", true);
      } else {
        this.camera = await openCamera(this.cameraSelect.value || undefined);
        this.media.publish("camera", this.camera);
        this.grid.setLocal("camera", this.camera);
        label(this.cam, "controls.camera_off", false);
      }
    } catch (err) {
      clear(this.notice).append(el("p", { class: "media-error", testid: "media-error", i18n: `media.error_${mediaErrorKind(err)}` }));
      this.notice.hidden = false;
      setTimeout(() => (this.notice.hidden = true), 6000);
    } finally {
      this.cam.disabled = this.mode === "view";
    }
  }

  togglePanel(open = this.panel.hidden) {
    this.panel.hidden = !open;
    this.devices.setAttribute("aria-expanded", String(open));
    if (open) {
      this.fillDevices();
      this.cameraSelect.focus();
    }
  }

  async fillDevices() {
    await fillDeviceSelects(this.cameraSelect, this.micSelect, this.cameraId(), this.microphone?.getSettings().deviceId);
    this.onDevices?.();
  }

  async switchCamera(deviceId) {
    saveDevice("camera", deviceId);
    if (!this.camera) return;
    const track = await openCamera(deviceId);
    const old = this.camera;
    this.camera = track;
    await this.media.replace("camera", track);
    this.grid.setLocal("camera", track);
    old.stop();
    this.onDevices?.();
  }

  async switchMicrophone(deviceId) {
    saveDevice("microphone", deviceId);
    if (!this.microphone) return;
    const track = await openMicrophone(deviceId);
    track.enabled = this.microphone.enabled;
    const old = this.microphone;
    this.microphone = track;
    await this.media.replace("microphone", track);
    this.meter.attach(track);
    old.stop();
  }

  stop() {
    this.meter.detach();
    this.camera?.stop();
    this.microphone?.stop();
    this.camera = null;
    this.microphone = null;
  }
}
