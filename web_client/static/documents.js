// Documents: the clerk's second source (a document camera, or the screen) published as
// source "document", full-resolution stills of it (POST /api/sessions/{sid}/snapshots),
// and the stills everyone receives (`snapshot`), fetched with the token and shown zoomable.
import { api, apiObjectUrl } from "/static/auth.js";
import { listDevices, openDocumentCamera, openScreen } from "/static/devices.js";
import { actorLine, clear, el, errorI18n, toast } from "/static/ui.js";
import { Viewer } from "/static/viewer.js";

// Grab one frame of a video track at its native resolution, as a JPEG blob.
async function still(track, video) {
  let frame = null;
  if (window.ImageCapture) frame = await new ImageCapture(track).grabFrame().catch(() => null);
  const width = frame ? frame.width : video.videoWidth;
  const height = frame ? frame.height : video.videoHeight;
  const canvas = el("canvas", { width, height });
  canvas.getContext("2d").drawImage(frame || video, 0, 0, width, height);
  frame?.close?.();
  return new Promise((resolve) => canvas.toBlob(resolve, "image/jpeg", 0.92));
}

export class DocumentSource {
  // media: MediaLink, grid: VideoGrid; cameraId(): the main camera's device id
  constructor({ select, button, media, grid, sessionId, cameraId }) {
    this.select = select;
    this.button = button;
    this.media = media;
    this.grid = grid;
    this.sessionId = sessionId;
    this.cameraId = cameraId;
    this.track = null;
    this.select.addEventListener("change", () => this.choose(this.select.value));
    this.button.addEventListener("click", () => this.snapshot());
    this.button.disabled = true;
    navigator.mediaDevices?.addEventListener?.("devicechange", () => this.fill());
  }

  async fill() {
    const { cameras } = await listDevices().catch(() => ({ cameras: [] }));
    const current = this.select.value || "none";
    const options = [el("option", { value: "none", i18n: "doc.none" })];
    cameras
      .filter((c) => c.deviceId !== this.cameraId())
      .forEach((c, i) => options.push(el("option", { value: `camera:${c.deviceId}`, i18n: "doc.camera", args: { name: c.label || i + 2 } })));
    if (navigator.mediaDevices?.getDisplayMedia) options.push(el("option", { value: "screen", i18n: "doc.screen" }));
    this.select.replaceChildren(...options);
    this.select.value = [...this.select.options].some((o) => o.value === current) ? current : "none";
  }

  async choose(value) {
    let track = null;
    try {
      if (value.startsWith("camera:")) track = await openDocumentCamera(value.slice(7));
      else if (value === "screen") track = await openScreen();
    } catch (err) {
      toast(err.name === "NotAllowedError" ? "doc.denied" : "doc.failed", null, "warn");
      this.select.value = this.track ? this.select.dataset.active : "none";
      return;
    }
    const old = this.track;
    this.track = track;
    this.select.dataset.active = track ? value : "none";
    if (track) {
      track.addEventListener("ended", () => {
        if (this.track === track) {
          this.select.value = "none";
          this.choose("none");
        }
      });
      if (old) await this.media.replace("document", track);
      else this.media.publish("document", track);
    } else {
      this.media.unpublish("document");
    }
    old?.stop();
    this.grid.setLocal("document", track);
    this.button.disabled = !track;
  }

  async snapshot() {
    if (!this.track) return;
    this.button.disabled = true;
    try {
      const blob = await still(this.track, this.grid.docVideo);
      await api(`/api/sessions/${this.sessionId}/snapshots`, { method: "POST", body: blob, headers: { "Content-Type": "image/jpeg" } });
      toast("doc.still_shared", null, "ok");
    } catch (err) {
      toast("doc.still_failed", null, "bad");
      console.warn("still failed", err);
    } finally {
      this.button.disabled = !this.track;
    }
  }

  stop() {
    this.track?.stop();
    this.track = null;
  }
}

export class SnapshotGallery {
  constructor(container, dialog, { sessionId, onNew }) {
    this.sessionId = sessionId;
    this.onNew = onNew;
    this.seen = new Set();
    this.viewer = new Viewer(dialog);
    this.grid = el("div", { class: "stills", testid: "snapshot-list" });
    this.empty = el("p", { class: "muted", i18n: "doc.no_stills" });
    this.error = el("p", { class: "form-error", attrs: { role: "alert" } });
    container.append(el("p", { class: "muted", i18n: "doc.stills_hint" }), this.empty, this.grid, this.error);
  }

  async load() {
    const { snapshots } = await api(`/api/sessions/${this.sessionId}/snapshots`);
    for (const s of snapshots) await this.add(s, false);
  }

  async add(snapshot, fresh = true) {
    if (this.seen.has(snapshot.snapshot_id)) return;
    this.seen.add(snapshot.snapshot_id);
    this.empty.remove();
    let src;
    try {
      src = await apiObjectUrl(snapshot.url);
    } catch (err) {
      clear(this.error).append(el("span", errorI18n(err)));
      return;
    }
    const img = el("img", { src, alt: "" });
    const item = el(
      "button",
      { type: "button", class: "still", testid: "snapshot-item", data: { snapshotId: snapshot.snapshot_id } },
      // Named by its caption too (what it shows), not by a label that hides it.
      el("span", { class: "sr-only", i18n: "doc.open_still" }),
      img,
      el("span", { class: "still-caption" }, actorLine(snapshot.taken_by), el("time", { ts: snapshot.created_at })),
    );
    item.addEventListener("click", () => this.viewer.open(src, snapshot));
    this.grid.prepend(item);
    if (fresh) this.onNew?.(snapshot);
  }
}
