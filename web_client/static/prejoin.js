// The applicant's pre-join screen (issue #16): their name from the link, a camera and
// microphone preview with the choice of devices, the recording notice with an explicit
// answer (filed in the case timeline: POST /api/sessions/{sid}/consent), then Join.
// Declining means what the service says (GET .../consent: join by voice only, or not at
// all). The answer is kept for the tab (sessionStorage), so a reload does not ask again.
import { api } from "/static/auth.js";
import { fillDeviceSelects, MicMeter, openLocal, saveDevice, stopTracks } from "/static/devices.js";
import { t } from "/static/i18n.js";
import { clear, el, errorI18n } from "/static/ui.js";

const KEY = (sid) => `jr.consent.${sid}`;

// What an earlier answer in this tab decided: {accepted, then} or null.
export function earlierAnswer(sid) {
  try {
    return JSON.parse(sessionStorage.getItem(KEY(sid)) || "null");
  } catch {
    return null;
  }
}

// Resolves with {accepted, then, stream, camera}: `then` "join", "audio_only" or "leave";
// `stream` the previewed media to publish (null: open it again, or none for "leave").
export function prejoin(sid, me) {
  return new Promise((resolve) => new Prejoin(sid, me, resolve).show());
}

class Prejoin {
  constructor(sid, me, done) {
    this.sid = sid;
    this.me = me;
    this.done = done;
    this.stream = null;
    this.answer = null;
    this.declined = "audio_only";
    this.meterBar = el("div", { class: "meter", attrs: { role: "meter", "aria-valuemin": "0", "aria-valuemax": "100", "aria-valuenow": "0" }, aria: "check.mic_level" });
    this.meter = new MicMeter(this.meterBar);
  }

  show() {
    this.video = el("video", { autoplay: true, muted: true, playsInline: true, class: "prejoin-video" });
    this.cameraOn = el("input", { type: "checkbox", id: "prejoin-camera-on", checked: true, testid: "prejoin-camera-on" });
    this.cameraSelect = el("select", { id: "prejoin-camera", testid: "prejoin-camera" });
    this.micSelect = el("select", { id: "prejoin-mic", testid: "prejoin-mic" });
    this.mediaNote = el("p", { class: "muted prejoin-media-note", attrs: { role: "status" } });
    this.accept = el("button", { type: "button", class: "big", testid: "consent-accept", i18n: "prejoin.accept", attrs: { "aria-pressed": "false" } });
    this.decline = el("button", { type: "button", class: "big quiet", testid: "consent-decline", i18n: "prejoin.decline", attrs: { "aria-pressed": "false" } });
    this.outcome = el("p", { class: "prejoin-outcome", attrs: { role: "status" } });
    this.join = el("button", { type: "button", class: "big primary", testid: "join-session", i18n: "prejoin.join", disabled: true });
    this.error = el("p", { class: "form-error", attrs: { role: "alert" } });
    this.accept.addEventListener("click", () => this.answerWith(true));
    this.decline.addEventListener("click", () => this.answerWith(false));
    this.join.addEventListener("click", () => this.finish());
    this.cameraOn.addEventListener("change", () => this.preview());
    this.cameraSelect.addEventListener("change", () => (saveDevice("camera", this.cameraSelect.value), this.preview()));
    this.micSelect.addEventListener("change", () => (saveDevice("microphone", this.micSelect.value), this.preview()));
    const name = el("input", { id: "prejoin-name", testid: "prejoin-name", value: this.me.name || "", readOnly: true });
    this.root = el(
      "main",
      { class: "prejoin", testid: "prejoin", attrs: { "aria-labelledby": "prejoin-title" } },
      el(
        "div",
        { class: "prejoin-card" },
        el("h1", { id: "prejoin-title", class: "prejoin-title", i18n: "prejoin.title" }),
        this.me.case ? el("p", { class: "muted" }, el("span", { i18n: "prejoin.case" }), " ", el("strong", { text: this.me.case })) : null,
        el("div", { class: "field" }, el("label", { htmlFor: "prejoin-name", i18n: "prejoin.name" }), name, el("span", { class: "hint", i18n: "prejoin.name_hint" })),
        el("div", { class: "prejoin-preview" }, this.video, el("div", { class: "prejoin-off", i18n: "prejoin.camera_is_off" })),
        this.mediaNote,
        el("label", { class: "check prejoin-toggle" }, this.cameraOn, el("span", { i18n: "prejoin.camera_on" })),
        el("div", { class: "prejoin-devices" },
          el("div", { class: "field" }, el("label", { htmlFor: "prejoin-camera", i18n: "check.camera" }), this.cameraSelect),
          el("div", { class: "field" }, el("label", { htmlFor: "prejoin-mic", i18n: "check.microphone" }), this.micSelect),
        ),
        el("div", { class: "muted", i18n: "check.mic_level" }),
        this.meterBar,
        el(
          "section",
          { class: "prejoin-notice", attrs: { "aria-labelledby": "prejoin-notice-title" } },
          el("h2", { id: "prejoin-notice-title", i18n: "prejoin.notice_title" }),
          el("p", { i18n: "prejoin.notice_text" }),
          el("p", { class: "muted", i18n: "prejoin.notice_decline_audio", testid: "consent-policy" }),
          el("div", { class: "prejoin-answers" }, this.accept, this.decline),
          this.outcome,
        ),
        this.error,
        this.join,
      ),
    );
    document.body.dataset.prejoin = "1";
    const app = document.getElementById("app");
    app.inert = true;
    app.setAttribute("aria-hidden", "true");
    app.before(this.root);
    this.loadPolicy();
    this.preview();
  }

  async loadPolicy() {
    try {
      const policy = await api(`/api/sessions/${encodeURIComponent(this.sid)}/consent`);
      this.declined = policy.declined;
    } catch {
      // the default: what the server says when the answer is filed
    }
    const p = this.root.querySelector("[data-testid=consent-policy]");
    p.dataset.declined = this.declined;
    p.dataset.i18n = this.declined === "leave" ? "prejoin.notice_decline_leave" : "prejoin.notice_decline_audio";
    p.textContent = t(p.dataset.i18n);
  }

  async preview() {
    stopTracks(this.stream);
    this.stream = null;
    const video = this.cameraOn.checked && this.answer?.then !== "audio_only";
    this.root.classList.toggle("camera-off", !video);
    try {
      this.stream = await openLocal({ video });
      this.video.srcObject = video ? new MediaStream(this.stream.getVideoTracks()) : null;
      this.meter.attach(this.stream.getAudioTracks()[0]);
      clear(this.mediaNote);
      await this.fillDevices();
    } catch (err) {
      this.video.srcObject = null;
      this.mediaNote.dataset.i18n = "prejoin.media_failed";
      this.mediaNote.textContent = t("prejoin.media_failed", { reason: err?.name || "" });
    }
  }

  async fillDevices() {
    const tracks = this.stream ? [this.stream.getVideoTracks()[0], this.stream.getAudioTracks()[0]] : [];
    await fillDeviceSelects(this.cameraSelect, this.micSelect, tracks[0]?.getSettings().deviceId, tracks[1]?.getSettings().deviceId);
  }

  async answerWith(accepted) {
    this.error.textContent = "";
    this.accept.disabled = this.decline.disabled = true;
    try {
      const filed = await api(`/api/sessions/${encodeURIComponent(this.sid)}/consent`, {
        method: "POST",
        body: { accepted, camera: this.cameraOn.checked, microphone: true },
      });
      this.answer = { accepted, then: filed.then };
      sessionStorage.setItem(KEY(this.sid), JSON.stringify(this.answer));
    } catch (err) {
      this.error.append(el("span", errorI18n(err)));
      return;
    } finally {
      this.accept.disabled = this.decline.disabled = false;
    }
    this.accept.setAttribute("aria-pressed", String(accepted));
    this.decline.setAttribute("aria-pressed", String(!accepted));
    const then = this.answer.then;
    this.outcome.dataset.then = then;
    this.outcome.dataset.i18n = `prejoin.outcome_${then}`;
    this.outcome.textContent = t(this.outcome.dataset.i18n);
    this.join.disabled = then === "leave";
    this.join.dataset.i18n = then === "audio_only" ? "prejoin.join_audio" : "prejoin.join";
    this.join.textContent = t(this.join.dataset.i18n);
    this.cameraOn.disabled = then === "audio_only";
    if (then === "audio_only") await this.preview(); // the camera goes off now
    if (then === "leave") stopTracks(this.stream);
  }

  finish() {
    if (!this.answer || this.answer.then === "leave") return;
    this.meter.detach();
    this.video.srcObject = null;
    this.root.remove();
    const app = document.getElementById("app");
    app.inert = false;
    app.removeAttribute("aria-hidden");
    delete document.body.dataset.prejoin;
    const camera = Boolean(this.stream?.getVideoTracks().length);
    this.done({ ...this.answer, stream: this.stream, camera });
  }
}
