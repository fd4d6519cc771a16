// The case file of a replayed session, to take away (GET /api/sessions/{sid}/casefile):
// the composite video once it is made, and every sealed file with its size and SHA-256.
// Shown at the top of the replay's side panel; nothing while the session runs or its case
// file is being sealed: the index is asked for only once the replay description says
// `sealed` (otherwise it would answer 409 `session_live` or `recording_sealing`, a failed
// request in the console for a normal state), and a short line when the index cannot be
// read: the replay goes on regardless.
//
// Each file's `src` is a grant URL (/api/casefile/<grant>) that a plain <a download>
// follows without the Bearer token; the server answers with an attachment. A grant ends
// at `grants_expire_at`: a click after that asks for the index again, then follows the
// fresh link. The composite is made by a job after sealing: when it is not there yet the
// panel says so (no polling; the user refreshes).
import { api } from "/static/auth.js";
import { WatermarkedExport } from "/static/export_copy.js";
import { clear, el, fill } from "/static/ui.js";

// Groups, in the order shown; an unknown kind counts as "other".
const KINDS = ["export", "sheet", "track", "still", "timeline", "manifest", "addendum", "other"];
const QUIET = new Set(["session_live", "recording_sealing"]);
// Renew a little before the grants end (the server's clock and ours differ a little).
const EXPIRY_MARGIN_S = 30;
// The index may say "sealing" a moment after the replay description said "sealed".
const SEALING_RETRY_MS = 1000;
const SEALING_TRIES = 5;

const MB = 1024 * 1024;

export function humanSize(bytes) {
  if (bytes < 1024) return `${bytes} B`;
  if (bytes < MB) return `${(bytes / 1024).toFixed(1)} KB`;
  if (bytes < 1024 * MB) return `${(bytes / MB).toFixed(1)} MB`;
  return `${(bytes / (1024 * MB)).toFixed(2)} GB`;
}

function megabytes(bytes) {
  const n = bytes / MB;
  return `${n.toFixed(n < 0.1 ? 2 : 1)} MB`;
}

function length(seconds) {
  const s = Math.round(seconds);
  const mmss = `${String(Math.floor((s % 3600) / 60)).padStart(2, "0")}:${String(s % 60).padStart(2, "0")}`;
  return s >= 3600 ? `${Math.floor(s / 3600)}:${mmss}` : mmss;
}

export class CaseFilePanel {
  // Reads the index once attached to a sealed session's replay.
  constructor(sid) {
    this.sid = sid;
    this.index = null;
    this.error = null;
    this.quiet = null; // session_live or recording_sealing: show nothing
    this.ended = false;
    this.duration = null;
    this.open = false; // the list of files, unfolded
    this.tries = 0;
    this.timer = null;
    this.gone = false;
    this.renewing = false;
    this.following = false;
    this.root = el("section", { class: "casefile", testid: "casefile", hidden: true, aria: "casefile.heading" });
  }

  // Placed once the player is built; `desc` is the replay description it plays.
  attach(parent, desc) {
    this.ended = desc.session?.status === "ended";
    this.duration = desc.recording?.duration_s || null;
    parent.prepend(this.root);
    if (desc.sealed) this.load();
    else this.quiet = this.ended ? "recording_sealing" : "session_live";
    this.render();
  }

  async load() {
    let index = null;
    let error = null;
    try {
      index = await api(`/api/sessions/${encodeURIComponent(this.sid)}/casefile`);
    } catch (err) {
      error = err;
    }
    if (this.gone) return;
    this.quiet = error && QUIET.has(error.code) ? error.code : null;
    if (index || this.quiet) this.index = index;
    this.error = this.quiet ? null : error;
    if (error && !this.quiet) console.warn("casefile: index not loaded", error.code || error);
    if (this.quiet === "recording_sealing") this.retrySoon();
    this.render();
  }

  // Only once the replay has opened as sealed: otherwise the page itself retries.
  retrySoon() {
    if (!this.ended || this.timer || this.tries >= SEALING_TRIES) return;
    this.tries += 1;
    this.timer = setTimeout(() => {
      this.timer = null;
      this.load();
    }, SEALING_RETRY_MS);
  }

  render() {
    const ix = this.index;
    this.root.hidden = !ix && !this.error;
    if (this.root.hidden) return clear(this.root);
    fill(
      this.root,
      el(
        "div",
        { class: "casefile-head" },
        el("h2", { class: "panel-sub first", i18n: "casefile.heading" }),
        ix?.sealed_at ? el("span", { class: "muted" }, el("span", { i18n: "casefile.sealed_at" }), " ", el("time", { ts: ix.sealed_at, tsStyle: "datetime" })) : null,
      ),
      ix ? this.composite(ix.export) : null,
      this.error ? el("p", { class: "form-error", testid: "casefile-error", data: { code: this.error.code || "" }, attrs: { role: "alert" }, i18n: "casefile.load_failed" }) : null,
      ix ? this.fileList(ix.files) : null,
    );
  }

  composite(x) {
    if (!x) return el("p", { class: "muted casefile-pending", testid: "casefile-export-pending", i18n: "casefile.export_pending" });
    const d = x.duration_s ?? this.duration;
    const long = d ? el("span", { i18n: "casefile.duration", args: { d: length(d) } }) : null;
    // export_watermark: the person's own copy, made by a job on the server (#18); the
    // sealed file's size and hash are not the copy's.
    if (this.index?.watermark) return (this.marked ??= new WatermarkedExport(this.sid)).view(x, el("div", { class: "muted casefile-meta" }, long));
    const meta = el("div", { class: "muted casefile-meta" }, el("span", { testid: "casefile-export-size", text: megabytes(x.size) }), long, x.sha256 ? this.hash(x.sha256) : null);
    const link = el("a", { class: "button primary casefile-export", testid: "casefile-export", data: { size: String(x.size) }, i18n: "casefile.download_export" });
    return el("div", { class: "casefile-composite" }, this.link(x, link, "casefile-export"), meta);
  }

  fileList(files) {
    const kindOf = (f) => (KINDS.includes(f.kind) ? f.kind : "other");
    const groups = KINDS.map((kind) => [kind, files.filter((f) => kindOf(f) === kind)]).filter(([, list]) => list.length);
    const details = el(
      "details",
      { class: "casefile-files", open: this.open, on: { toggle: () => (this.open = details.open) } },
      el("summary", { testid: "casefile-toggle", i18n: "casefile.files", args: { n: files.length } }),
      groups.flatMap(([kind, list]) => [
        el("h3", { class: "casefile-kind", data: { kind }, i18n: `casefile.kind_${kind}` }),
        el("ul", { class: "list casefile-list" }, list.map((f) => this.row(f))),
      ]),
      el("p", { class: "muted casefile-audit", i18n: "casefile.audit_note" }),
    );
    return details;
  }

  row(f) {
    const name = f.name || f.path.split("/").pop(); // people's names and sources (#16)
    return el(
      "li",
      { class: "casefile-file", testid: "casefile-file", data: { path: f.path, kind: f.kind } },
      el(
        "div",
        { class: "grow" },
        el("div", { class: "casefile-name", text: name, attrs: { title: f.path } }),
        el(
          "div",
          { class: "muted casefile-meta" },
          el("span", { class: "casefile-size", text: humanSize(f.size) }),
          f.sha256 ? this.hash(f.sha256) : el("span", { class: "casefile-hash", title: "casefile.no_hash" }, el("span", { i18n: "casefile.sha256" }), " —"),
        ),
      ),
      this.link(f, el("a", { class: "button casefile-get", testid: "casefile-download" }, el("span", { i18n: "casefile.download" }), el("span", { class: "sr-only", text: ` ${name}` })), "casefile-download"),
    );
  }

  hash(sha256) {
    return el("span", { class: "casefile-hash" }, el("span", { i18n: "casefile.sha256" }), " ", el("code", { text: sha256.slice(0, 12), attrs: { title: sha256 } }));
  }

  link(entry, a, testid) {
    a.href = entry.src;
    a.setAttribute("download", entry.name || "");
    a.dataset.path = entry.path;
    a.addEventListener("click", (ev) => this.follow(ev, entry.path, testid));
    return a;
  }

  // A click after the grants ended: the index again, then the fresh link.
  async follow(ev, path, testid) {
    const ix = this.index;
    if (this.following) return; // the fresh link, clicked below: let it go
    if (!ix || Date.now() / 1000 < ix.grants_expire_at - EXPIRY_MARGIN_S) return;
    ev.preventDefault();
    if (this.renewing) return;
    this.renewing = true;
    try {
      await this.load();
    } finally {
      this.renewing = false;
    }
    if (!this.index || this.error || Date.now() / 1000 >= this.index.grants_expire_at) return;
    const fresh = [...this.root.querySelectorAll(`[data-testid="${testid}"]`)].find((a) => a.dataset.path === path);
    if (!fresh) return;
    this.following = true;
    fresh.click();
    this.following = false;
  }

  destroy() {
    this.gone = true;
    clearTimeout(this.timer);
    this.marked?.destroy();
    this.root.remove();
  }
}
