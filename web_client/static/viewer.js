// A zoomable viewer for document stills: fit, zoom in/out (buttons, + / - / 0 keys, the
// wheel), drag to pan, Esc to close. Stills are shown at their full resolution.
import { actorLine, el } from "/static/ui.js";

const STEPS = [0.25, 0.33, 0.5, 0.67, 0.75, 1, 1.25, 1.5, 2, 3, 4];

export class Viewer {
  constructor(dialog) {
    this.dialog = dialog;
    this.img = el("img", { alt: "", testid: "viewer-image", draggable: false });
    this.scroller = el("div", { class: "viewer-body" }, this.img);
    this.caption = el("div", { class: "viewer-caption" });
    this.zoomText = el("span", { class: "viewer-zoom", testid: "viewer-zoom" });
    const button = (key, testid, fn) => el("button", { type: "button", class: "quiet small", i18n: key, testid, on: { click: fn } });
    dialog.append(
      el(
        "div",
        { class: "viewer-bar" },
        this.caption,
        el("span", { class: "grow" }),
        button("viewer.zoom_out", "zoom-out", () => this.step(-1)),
        this.zoomText,
        button("viewer.zoom_in", "zoom-in", () => this.step(1)),
        button("viewer.fit", "zoom-fit", () => this.fit()),
        button("viewer.actual", "zoom-actual", () => this.zoom(1)),
        button("viewer.close", "viewer-close", () => dialog.close()),
      ),
      this.scroller,
    );
    dialog.addEventListener("keydown", (ev) => {
      if (ev.key === "+" || ev.key === "=") this.step(1);
      else if (ev.key === "-") this.step(-1);
      else if (ev.key === "0") this.fit();
    });
    this.scroller.addEventListener("wheel", (ev) => {
      ev.preventDefault();
      this.step(ev.deltaY < 0 ? 1 : -1);
    }, { passive: false });
    let drag = null;
    this.scroller.addEventListener("pointerdown", (ev) => {
      drag = { x: ev.clientX, y: ev.clientY, left: this.scroller.scrollLeft, top: this.scroller.scrollTop };
      this.scroller.setPointerCapture(ev.pointerId);
    });
    this.scroller.addEventListener("pointermove", (ev) => {
      if (!drag) return;
      this.scroller.scrollLeft = drag.left - (ev.clientX - drag.x);
      this.scroller.scrollTop = drag.top - (ev.clientY - drag.y);
    });
    this.scroller.addEventListener("pointerup", () => (drag = null));
    this.scale = 1;
  }

  open(src, snapshot) {
    this.caption.replaceChildren(actorLine(snapshot.taken_by), " ", el("time", { class: "muted", ts: snapshot.created_at }));
    this.img.onload = () => this.fit();
    this.img.src = src;
    this.dialog.showModal();
  }

  fitScale() {
    const w = this.img.naturalWidth || 1;
    const h = this.img.naturalHeight || 1;
    return Math.min(1, (this.scroller.clientWidth - 16) / w, (this.scroller.clientHeight - 16) / h);
  }

  fit() {
    this.zoom(this.fitScale());
  }

  step(dir) {
    const next = dir > 0 ? STEPS.find((s) => s > this.scale + 0.001) : [...STEPS].reverse().find((s) => s < this.scale - 0.001);
    if (next) this.zoom(next);
  }

  zoom(scale) {
    this.scale = scale;
    this.img.style.width = `${Math.round((this.img.naturalWidth || 0) * scale)}px`;
    this.zoomText.textContent = `${Math.round(scale * 100)}%`;
    this.dialog.dataset.scale = scale.toFixed(2);
  }
}
