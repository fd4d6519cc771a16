// The camera and microphone check a reviewer sees before entering: a local preview, a
// live microphone level, and the choice of devices (kept for the session page).
import { listDevices, MicMeter, mediaErrorKind, openLocal, saveDevice, savedDevice, stopTracks } from "/static/devices.js";
import { t } from "/static/i18n.js";
import { clear, el } from "/static/ui.js";

export class DeviceCheck {
  constructor(container) {
    this.container = container;
    this.stream = null;
    this.video = el("video", { autoplay: true, muted: true, playsInline: true, testid: "check-preview" });
    this.off = el("div", { class: "preview-off", i18n: "check.off" });
    this.bar = el("div", { class: "meter", attrs: { role: "meter", "aria-valuemin": "0", "aria-valuemax": "100", "aria-valuenow": "0" }, testid: "mic-level", aria: "check.mic_level" });
    this.camera = el("select", { id: "check-camera", testid: "check-camera" });
    this.microphone = el("select", { id: "check-microphone", testid: "check-microphone" });
    this.message = el("p", { class: "form-error", attrs: { role: "alert" } });
    this.toggle = el("button", { type: "button", class: "quiet", testid: "device-check", i18n: "check.start" });
    this.meter = new MicMeter(this.bar);
    container.append(
      el("div", { class: "preview" }, this.video, this.off),
      el("div", { class: "muted", i18n: "check.mic_level" }),
      this.bar,
      el("div", { class: "field" }, el("label", { htmlFor: "check-camera", i18n: "check.camera" }), this.camera),
      el("div", { class: "field" }, el("label", { htmlFor: "check-microphone", i18n: "check.microphone" }), this.microphone),
      this.message,
      this.toggle,
    );
    this.toggle.addEventListener("click", () => (this.stream ? this.stop() : this.start()));
    this.camera.addEventListener("change", () => {
      saveDevice("camera", this.camera.value);
      if (this.stream) this.start();
    });
    this.microphone.addEventListener("change", () => {
      saveDevice("microphone", this.microphone.value);
      if (this.stream) this.start();
    });
  }

  get running() {
    return Boolean(this.stream);
  }

  async start() {
    this.stop();
    clear(this.message);
    try {
      this.stream = await openLocal();
    } catch (err) {
      this.message.append(el("span", { i18n: `media.error_${mediaErrorKind(err)}` }));
      return;
    }
    this.video.srcObject = this.stream;
    this.video.play().catch(() => {});
    this.off.hidden = true;
    this.meter.attach(this.stream.getAudioTracks()[0]);
    this.toggle.dataset.i18n = "check.stop";
    this.toggle.textContent = t("check.stop");
    await this.fillDevices();
  }

  stop() {
    this.meter.detach();
    stopTracks(this.stream);
    this.stream = null;
    this.video.srcObject = null;
    this.off.hidden = false;
    this.toggle.dataset.i18n = "check.start";
    this.toggle.textContent = t("check.start");
  }

  async fillDevices() {
    const { cameras, microphones } = await listDevices();
    const fill = (select, devices, kind, active) => {
      select.replaceChildren(
        ...devices.map((d, i) => el("option", { value: d.deviceId, text: d.label || t(`check.${kind}_n`, { n: i + 1 }) })),
      );
      select.value = active || savedDevice(kind) || devices[0]?.deviceId || "";
    };
    const settings = (track) => track?.getSettings?.().deviceId;
    fill(this.camera, cameras, "camera", settings(this.stream?.getVideoTracks()[0]));
    fill(this.microphone, microphones, "microphone", settings(this.stream?.getAudioTracks()[0]));
  }
}
