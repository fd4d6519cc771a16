// The composite video as the person's own watermarked copy (`export_watermark`, #18):
// the server burns who downloads it and when into the picture, in a background job.
// The button asks for the copy (POST .../casefile/watermarked: the job, at once), the
// panel then shows "正在生成带水印的导出… 42%" from the job's status (polled, without
// reloading), and once made the link that downloads it (a grant URL, as every link of
// the case file; the same copy while the server keeps it). A failure is shown with its
// error and the button asks again. A reloaded page picks up the copy asked for before
// (GET .../casefile/watermarked). Used by casefile.js when the index says `watermark`.
import { api } from "/static/auth.js";
import { el, fill } from "/static/ui.js";

const POLL_MS = 700;

export class WatermarkedExport {
  constructor(sid) {
    this.sid = sid;
    this.job = null;
    this.error = null;
    this.timer = null;
    this.gone = false;
    this.asking = false;
    this.root = el("div", { class: "casefile-composite casefile-wm", testid: "casefile-wm" });
    this.resume();
  }

  // A reloaded page picks up the copy asked for before (being made, made, or failed).
  async resume() {
    try {
      const job = await api(`/api/sessions/${encodeURIComponent(this.sid)}/casefile/watermarked`);
      if (!job.job_id || this.gone || this.job || this.asking) return; // 204: none
      this.take(job);
    } catch {
      return; // not now: the button asks
    }
    this.render();
    this.follow();
  }

  take(job) {
    this.job = job;
    if (job.status === "failed") this.error = { code: "failed", message: job.error };
  }

  // The panel's composite entry (`x`: its size, length, hash) in the current state.
  view(x, meta) {
    this.entry = x;
    this.meta = meta;
    this.render();
    return this.root;
  }

  render() {
    const job = this.job;
    const state = this.error ? "failed" : job?.status || "idle";
    this.root.dataset.state = state;
    let main;
    if (state === "done") {
      main = el("a", {
        class: "button primary casefile-export",
        testid: "casefile-wm-ready",
        href: job.src,
        download: this.entry?.name || "",
        data: { size: String(job.size) },
        i18n: "casefile.wm_ready",
      });
    } else if (state === "queued" || state === "running") {
      main = el(
        "div",
        { class: "casefile-wm-progress" },
        el("p", { testid: "casefile-wm-progress", attrs: { role: "status" }, data: { progress: String(job.progress) }, i18n: "casefile.wm_making", args: { p: job.progress } }),
        el("progress", { max: 100, value: job.progress, aria: "casefile.wm_progress" }),
      );
    } else {
      main = el("button", { type: "button", class: "button primary casefile-export", testid: "casefile-export", i18n: "casefile.download_export", on: { click: () => this.ask() } });
    }
    const failure = state === "failed" ? el("p", { class: "form-error", testid: "casefile-wm-error", data: { code: this.error.code || "" }, attrs: { role: "alert" }, i18n: "casefile.wm_failed", args: { error: this.error.message || this.error.code || "" } }) : null;
    fill(this.root, failure, main, this.meta || null, el("p", { class: "muted casefile-wm-note", i18n: "casefile.wm_note" }));
  }

  async ask() {
    if (this.asking) return;
    this.asking = true;
    this.error = null;
    try {
      this.take(await api(`/api/sessions/${encodeURIComponent(this.sid)}/casefile/watermarked`, { method: "POST" }));
    } catch (err) {
      this.job = null;
      this.error = err;
    } finally {
      this.asking = false;
    }
    if (this.gone) return;
    this.render();
    this.follow();
  }

  follow() {
    clearTimeout(this.timer);
    if (this.gone || this.error || !this.job || this.job.status === "done") return;
    this.timer = setTimeout(() => this.poll(), POLL_MS);
  }

  async poll() {
    try {
      this.take(await api(this.job.status_url));
    } catch (err) {
      this.error = err; // expired, or the node that made it is gone: ask again
    }
    if (this.gone) return;
    this.render();
    this.follow();
  }

  destroy() {
    this.gone = true;
    clearTimeout(this.timer);
  }
}
