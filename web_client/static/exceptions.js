// The Exceptions tab (异常) of /supervise: GET /api/exceptions?since&until&kind&status&dept
// a page at a time (newest first; "more" follows next_cursor), each row linked to the
// replay at its moment (`offset_s`), a Handle action with a note (POST
// /api/exceptions/{id}/handle; 409 exception_handled shows as "already handled"), and
// new ones arriving live: the socket pushes {"type": "exception"} and
// {"type": "exception.updated"} to supervisors (signal passed in by supervise.js).
// The CSV holds every page of the filters, up to CSV_MAX rows (the page says when cut).
import { api } from "/static/auth.js";
import { t } from "/static/i18n.js";
import { csvButton, dataTable, dayAfter, dayStart, periodFields } from "/static/suptable.js";
import { deptLabel, departmentList, el, errorI18n, fill } from "/static/ui.js";

export const KINDS = ["invitation_unanswered", "invitation_declined", "long_wait", "session_broken_off", "no_opinion", "recording_failed", "recording_gap", "media_quality"];
const PAGE = 100;
const CSV_PAGE = 500;
const CSV_MAX = 5000;

const pct = (v) => (typeof v === "number" ? `${Math.round(v * 1000) / 10}%` : "—");

// Reviewers' names by sub (GET /api/directory): an exception's detail names people by sub.
const names = new Map();
export async function loadNames() {
  try {
    for (const r of (await api("/api/directory")).reviewers) names.set(r.sub, r.name);
  } catch {
    // Then the subs are shown as they are.
  }
}
const person = (sub) => (typeof sub === "string" ? names.get(sub) || sub : sub?.name || sub?.sub || "");

// What went wrong, in a line.
export function summary(x) {
  const d = x.detail || {};
  const args = { ...d, answer_s: Math.round(d.answer_s ?? 0), limit_s: Math.round(d.limit_s ?? 0), loss: pct(d.loss), by: person(d.by || d.reviewer), name: d.name || person(d.sub) };
  if (x.kind === "invitation_declined") return t("exc.sum_declined", { by: args.by, reason: d.reason || "" });
  if (x.kind === "long_wait") return t("exc.sum_long_wait", { ...args, outcome: t(`status.${d.outcome}`) });
  if (x.kind === "session_broken_off") return t(`exc.sum_broken_${d.reason === "idle" ? "idle" : "lost"}`);
  if (x.kind === "recording_failed") return [d.code, d.message].filter(Boolean).join(": ");
  if (x.kind === "recording_gap") return t("exc.sum_gap", { s: Math.round(((d.end ?? 0) - (d.start ?? 0)) * 10) / 10 });
  if (x.kind === "media_quality") return t("exc.sum_media", { ...args, fps: d.fps ?? "—", frozen: d.frozen_s ?? 0 });
  if (x.kind === "no_opinion") return t("exc.sum_no_opinion", args);
  return t("exc.sum_unanswered");
}

export class ExceptionsTab {
  constructor(panel, { openReplay, notify }) {
    this.openReplay = openReplay;
    this.notify = notify;
    this.rows = [];
    this.fresh = new Set();
    this.cursor = null;
    this.filters = null;
    this.period = periodFields("exc", () => this.load());
    this.kind = el("select", { id: "exc-kind", testid: "exc-kind" }, el("option", { value: "", i18n: "exc.kind_any" }), KINDS.map((k) => el("option", { value: k, i18n: `exc.kind_${k}` })));
    this.status = el("select", { id: "exc-status", testid: "exc-status" }, el("option", { value: "", i18n: "exc.status_any" }), el("option", { value: "open", i18n: "exc.status_open" }), el("option", { value: "handled", i18n: "exc.status_handled" }));
    this.dept = el("select", { id: "exc-dept", testid: "exc-dept" }, el("option", { value: "", i18n: "supervise.dept_any" }), departmentList().map((d) => el("option", { value: d.id, dept: d.id })));
    this.error = el("p", { class: "form-error", attrs: { role: "alert" } });
    this.count = el("span", { class: "muted", testid: "exc-count", attrs: { role: "status", "aria-live": "polite" } });
    this.list = el("div", { class: "exc-list" });
    this.more = el("button", { type: "button", class: "quiet", testid: "exc-more", i18n: "exc.more", hidden: true, on: { click: () => this.page() } });
    this.csvNote = el("p", { class: "muted", testid: "exc-csv-note", hidden: true });
    const field = (id, key, input) => el("div", { class: "field" }, el("label", { attrs: { for: id }, i18n: key }), input);
    const form = el(
      "form",
      { class: "filter-form", testid: "exc-form", novalidate: true, on: { submit: (ev) => (ev.preventDefault(), this.load()) } },
      this.period.node,
      field("exc-kind", "exc.kind", this.kind),
      field("exc-status", "exc.status", this.status),
      field("exc-dept", "supervise.dept", this.dept),
      el("div", { class: "field search-go" }, el("button", { type: "submit", class: "primary", testid: "exc-submit", i18n: "supervise.search" })),
    );
    const csv = csvButton({
      testid: "exc-csv",
      nameParts: () => ["@exc.csv_prefix", this.period.since.value, this.period.until.value, this.kind.value, this.status.value, this.dept.value],
      columns: this.columns(),
      rows: () => this.everything(),
    });
    panel.append(
      el("section", { class: "card", attrs: { "aria-labelledby": "exc-heading" } }, el("div", { class: "card-head" }, el("h2", { id: "exc-heading", i18n: "exc.heading" })), form, this.error),
      el(
        "section",
        { class: "card", attrs: { "aria-labelledby": "exc-list-h" } },
        el("div", { class: "card-head" }, el("h2", { id: "exc-list-h", i18n: "exc.list" }), this.count, csv),
        this.csvNote,
        this.list,
        this.more,
      ),
      this.dialog(),
    );
    this.period.set("30");
    this.status.value = "open";
  }

  columns() {
    return [
      { key: "exc.col_at", value: (x) => new Date(x.at * 1000).toISOString(), render: (x) => el("time", { ts: x.at, tsStyle: "datetime" }) },
      { key: "exc.kind", value: (x) => t(`exc.kind_${x.kind}`), render: (x) => el("span", { class: `kind kind-${x.kind}`, i18n: `exc.kind_${x.kind}` }) },
      { key: "supervise.case_number", value: (x) => x.case_id, render: (x) => el("span", { class: "case-no", text: x.case_id }) },
      { key: "supervise.dept", value: (x) => (x.dept ? deptLabel(x.dept) : ""), render: (x) => (x.dept ? el("span", { dept: x.dept }) : null) },
      { key: "exc.col_detail", value: summary, render: (x) => el("span", { class: "exc-detail", text: summary(x) }) },
      { key: "exc.col_moment", value: (x) => x.offset_s, render: (x) => this.replayLink(x), num: true },
      { key: "exc.status", value: (x) => t(`exc.status_${x.status}`), render: (x) => this.statusCell(x) },
      { key: "exc.col_note", value: (x) => x.note || "", render: (x) => (x.note ? el("span", { class: "exc-note", text: x.note }) : null) },
      { key: "exc.col_session", value: (x) => x.session_id },
    ];
  }

  replayLink(x) {
    if (!x.session_id) return null;
    const at = Math.max(0, x.offset_s || 0);
    const href = `/supervise?session=${encodeURIComponent(x.session_id)}&t=${at.toFixed(1)}`;
    const mm = `${String(Math.floor(at / 60)).padStart(2, "0")}:${String(Math.floor(at % 60)).padStart(2, "0")}`;
    return el("a", {
      href,
      class: "button quiet exc-replay",
      testid: "exc-replay",
      data: { t: String(at) },
      on: {
        click: (ev) => {
          if (ev.ctrlKey || ev.metaKey || ev.shiftKey) return; // a new tab: the link itself
          ev.preventDefault();
          this.openReplay(x.session_id, at);
        },
      },
      attrs: { "aria-label": t("exc.replay_at_label", { t: mm, case: x.case_id }) },
    }, el("span", { i18n: "exc.replay_at", args: { t: mm } }));
  }

  statusCell(x) {
    if (x.status === "handled") {
      return el("span", { class: "exc-status" }, el("span", { class: "chip chip-ok", i18n: "exc.status_handled" }), x.handled_by ? el("span", { class: "muted", text: ` ${x.handled_by.name || x.handled_by.sub}` }) : null);
    }
    return el(
      "span",
      { class: "exc-status" },
      el("span", { class: "chip chip-warn", i18n: "exc.status_open" }),
      el("button", { type: "button", class: "quiet exc-handle", testid: "exc-handle", i18n: "exc.handle", on: { click: () => this.ask(x) } }),
    );
  }

  dialog() {
    this.note = el("textarea", { id: "exc-note", testid: "exc-note", maxLength: 1000, rows: 3 });
    this.dlgError = el("p", { class: "form-error", testid: "exc-handle-error", attrs: { role: "alert" } });
    this.dlgWhat = el("p", { class: "muted" });
    this.dlg = el(
      "dialog",
      { class: "exc-dialog", testid: "exc-dialog", attrs: { "aria-labelledby": "exc-dlg-h" } },
      el(
        "form",
        { method: "dialog", on: { submit: (ev) => (ev.preventDefault(), this.handle()) } },
        el("h2", { id: "exc-dlg-h", i18n: "exc.handle_title" }),
        this.dlgWhat,
        el("label", { attrs: { for: "exc-note" }, i18n: "exc.note_label" }),
        this.note,
        this.dlgError,
        el(
          "div",
          { class: "row dlg-actions" },
          el("button", { type: "submit", class: "primary", testid: "exc-handle-confirm", i18n: "exc.handle_confirm" }),
          el("button", { type: "button", class: "quiet", testid: "exc-handle-cancel", i18n: "exc.cancel", on: { click: () => this.dlg.close() } }),
        ),
      ),
    );
    return this.dlg;
  }

  ask(x) {
    this.target = x;
    this.note.value = "";
    fill(this.dlgError);
    fill(this.dlgWhat, el("span", { text: `${t(`exc.kind_${x.kind}`)} · ${x.case_id} · ${summary(x)}` }));
    this.dlg.showModal();
    this.note.focus();
  }

  async handle() {
    const x = this.target;
    const note = this.note.value.trim();
    if (!note) return fill(this.dlgError, el("span", { i18n: "exc.note_required" }));
    try {
      this.upsert(await api(`/api/exceptions/${encodeURIComponent(x.exception_id)}/handle`, { method: "POST", body: { note } }));
      this.dlg.close();
    } catch (err) {
      if (err.code === "exception_handled") {
        fill(this.dlgError, el("span", { i18n: "exc.already_handled", testid: "exc-already-handled" }));
        this.upsert(await api(`/api/exceptions/${encodeURIComponent(x.exception_id)}`).catch(() => x));
      } else fill(this.dlgError, el("span", errorI18n(err)));
    }
  }

  query(limit) {
    const q = new URLSearchParams({ limit: String(limit) });
    const since = dayStart(this.period.since.value);
    const until = dayAfter(this.period.until.value);
    if (since !== null) q.set("since", String(since));
    if (until !== null) q.set("until", String(until));
    for (const [k, v] of [["kind", this.kind.value], ["status", this.status.value], ["dept", this.dept.value]]) if (v) q.set(k, v);
    return q;
  }

  async load() {
    this.filters = { since: dayStart(this.period.since.value), until: dayAfter(this.period.until.value), kind: this.kind.value, status: this.status.value, dept: this.dept.value };
    this.rows = [];
    this.fresh.clear();
    this.cursor = null;
    this.csvNote.hidden = true;
    fill(this.list, el("p", { class: "muted", i18n: "supervise.loading" }));
    await this.page();
  }

  async page() {
    fill(this.error);
    const q = this.query(PAGE);
    if (this.cursor) q.set("cursor", this.cursor);
    try {
      const body = await api(`/api/exceptions?${q}`);
      this.rows.push(...body.exceptions.filter((x) => !this.rows.some((r) => r.exception_id === x.exception_id)));
      this.cursor = body.next_cursor;
    } catch (err) {
      fill(this.error, el("span", errorI18n(err)));
    }
    this.render();
  }

  // Every page of the filters, for the CSV (CSV_MAX rows at most: the page says so).
  async everything() {
    const out = [];
    let cursor = null;
    do {
      const q = this.query(CSV_PAGE);
      if (cursor) q.set("cursor", cursor);
      const body = await api(`/api/exceptions?${q}`);
      out.push(...body.exceptions);
      cursor = body.next_cursor;
    } while (cursor && out.length < CSV_MAX);
    const cut = Boolean(cursor) || out.length > CSV_MAX;
    this.csvNote.hidden = !cut;
    if (cut) fill(this.csvNote, el("span", { i18n: "exc.csv_truncated", args: { n: CSV_MAX } }));
    return out.slice(0, CSV_MAX);
  }

  render() {
    fill(this.count, el("span", { i18n: this.cursor ? "exc.count_more" : "exc.count", args: { n: this.rows.length } }));
    this.more.hidden = !this.cursor;
    if (!this.rows.length) return fill(this.list, el("p", { class: "muted", testid: "exc-empty", i18n: "exc.none" }));
    fill(
      this.list,
      dataTable({
        columns: this.columns().slice(0, -1),
        rows: this.rows,
        testid: "exc-table",
        rowTestid: "exc-row",
        caption: "exc.list",
        rowData: (x) => ({ exceptionId: x.exception_id, kind: x.kind, status: x.status, sessionId: x.session_id || "", new: this.fresh.has(x.exception_id) ? "1" : "" }),
      }),
    );
  }

  matches(x) {
    const f = this.filters;
    if (!f) return false;
    return (!f.kind || f.kind === x.kind) && (!f.status || f.status === x.status) && (!f.dept || f.dept === x.dept) && (f.since === null || x.at >= f.since) && (f.until === null || x.at <= f.until);
  }

  // A pushed exception (new, or handled elsewhere): into the list when it matches.
  upsert(x, pushed = false) {
    const i = this.rows.findIndex((r) => r.exception_id === x.exception_id);
    if (i >= 0) this.rows[i] = x;
    else if (this.matches(x)) {
      this.rows.unshift(x);
      if (pushed) {
        this.fresh.add(x.exception_id);
        this.notify?.();
      }
    } else return;
    this.render();
  }

  follow(signal) {
    signal.on("exception", (msg) => this.upsert(msg.exception, true));
    signal.on("exception.updated", (msg) => this.upsert(msg.exception));
    signal.on("reconnected", () => this.filters && this.load());
  }
}
