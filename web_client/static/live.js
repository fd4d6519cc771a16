// The Live tab (实时) of /supervise: GET /api/live, asked again every `poll_s` while
// the tab is shown (and the page visible): the sessions in progress with who is in,
// for how long, each one's media health (loss, fps, freezes and a plain ok / poor
// marker), who observes, the invitations ringing now and for how long; a Watch button
// opens the session to observe it receive-only (session.js does `observe` for a
// supervisor; an admin's link carries ?observe). Tables exportable as CSV.
import { api, tokenClaims } from "/static/auth.js";
import { t } from "/static/i18n.js";
import { csvButton, dataTable, seconds } from "/static/suptable.js";
import { actorLine, deptLabel, el, errorI18n, fill } from "/static/ui.js";

const DEFAULT_POLL_S = 2;
// Poor media: as the exceptions count it (loss ≥ 5 %, frozen), or no frames at all.
const BAD_LOSS = 0.05;

export function health(media) {
  if (!media) return "none";
  if (media.frozen || (media.loss ?? 0) >= BAD_LOSS || media.connection === "failed") return "bad";
  return "ok";
}

const who = (p) => p.identity?.name || p.identity?.sub || "";
const pct = (v) => (typeof v === "number" ? `${Math.round(v * 1000) / 10}%` : null);
const dur = (s) => seconds(s);

const PARTICIPANT_COLUMNS = [
  { key: "live.col_who", value: who, render: (p) => actorLine(p.identity) },
  { key: "live.col_state", value: (p) => t(`live.state_${p.state}`), render: (p) => el("span", { class: `chip ${p.state === "joined" ? "chip-ok" : "chip-warn"}`, i18n: `live.state_${p.state}` }) },
  { key: "live.col_in_for", value: (p) => Math.round(p.in_for_s ?? 0), render: (p) => dur(p.in_for_s), num: true },
  { key: "live.col_loss", value: (p) => p.media?.loss ?? null, render: (p) => pct(p.media?.loss), num: true },
  { key: "live.col_fps", value: (p) => p.media?.fps ?? null, render: (p) => (p.media?.fps ?? null) === null ? null : String(Math.round(p.media.fps)), num: true },
  { key: "live.col_freezes", value: (p) => p.media?.freezes ?? null, num: true },
  {
    key: "live.col_health",
    value: (p) => t(`live.health_${health(p.media)}`),
    render: (p) => {
      const h = health(p.media);
      return el("span", { class: `chip ${{ ok: "chip-ok", bad: "chip-bad", none: "chip-muted" }[h]}`, testid: "live-health", data: { health: h }, i18n: `live.health_${h}` });
    },
  },
];

const RINGING_COLUMNS = [
  { key: "supervise.case_number", value: (i) => i.case_id, render: (i) => el("span", { class: "case-no", text: i.case_id || "" }) },
  { key: "live.col_invited", value: (i) => (i.dept ? deptLabel(i.dept) : i.reviewer_name || i.reviewer || ""), render: (i) => (i.dept ? el("span", { dept: i.dept }) : el("span", { text: i.reviewer_name || i.reviewer || "" })) },
  { key: "live.col_status", value: (i) => t(`status.${i.status}`), render: (i) => el("span", { class: "chip chip-wait", i18n: `status.${i.status}` }) },
  { key: "live.col_ringing_for", value: (i) => Math.round(i.ringing_for_s ?? 0), render: (i) => dur(i.ringing_for_s), num: true },
];

// One flat row per participant for the CSV of the sessions.
const SESSION_CSV = [
  { key: "supervise.case_number", value: (r) => r.s.case_id },
  { key: "live.col_window", value: (r) => r.s.window || "" },
  { key: "live.col_running", value: (r) => Math.round(r.s.running_for_s) },
  ...PARTICIPANT_COLUMNS.map((c) => ({ key: c.key, value: (r) => (r.p ? c.value(r.p) : "") })),
  { key: "live.col_role", value: (r) => (r.p?.identity?.role ? t(`role.${r.p.identity.role}`) : "") },
  { key: "supervise.dept", value: (r) => (r.p?.identity?.dept ? deptLabel(r.p.identity.dept) : "") },
];

export class LiveTab {
  constructor(panel) {
    this.data = null;
    this.timer = null;
    this.active = false;
    this.status = el("span", { class: "muted", testid: "live-updated", attrs: { role: "status" } });
    this.error = el("p", { class: "form-error", attrs: { role: "alert" } });
    this.sessions = el("div", { class: "live-sessions", testid: "live-sessions" });
    this.ringing = el("div", { class: "live-ringing" });
    const stamp = () => (this.data ? new Date(this.data.server_time * 1000).toISOString().slice(0, 19).replace(/[:T]/g, "-") : "");
    panel.append(
      el(
        "section",
        { class: "card", attrs: { "aria-labelledby": "live-heading" } },
        el(
          "div",
          { class: "card-head" },
          el("h2", { id: "live-heading", i18n: "live.heading" }),
          this.status,
          csvButton({ testid: "live-csv", nameParts: () => ["@live.csv_prefix", stamp()], columns: SESSION_CSV, rows: async () => this.flat() }),
        ),
        this.error,
        this.sessions,
      ),
      el(
        "section",
        { class: "card", attrs: { "aria-labelledby": "live-ringing-h" } },
        el(
          "div",
          { class: "card-head" },
          el("h2", { id: "live-ringing-h", i18n: "live.ringing" }),
          csvButton({ testid: "live-ringing-csv", nameParts: () => ["@live.csv_ringing", stamp()], columns: RINGING_COLUMNS, rows: async () => this.data?.ringing || [] }),
        ),
        this.ringing,
      ),
    );
    document.addEventListener("visibilitychange", () => this.schedule(0));
  }

  flat() {
    const out = [];
    for (const s of this.data?.sessions || []) {
      if (!s.participants.length) out.push({ s, p: null });
      for (const p of s.participants) out.push({ s, p });
    }
    return out;
  }

  show(on) {
    this.active = on;
    this.schedule(0);
  }

  schedule(ms) {
    clearTimeout(this.timer);
    this.timer = null;
    if (this.active && !document.hidden) this.timer = setTimeout(() => this.poll(), ms);
  }

  async poll() {
    try {
      this.data = await api("/api/live?limit=50");
      fill(this.error);
      this.render();
    } catch (err) {
      fill(this.error, el("span", errorI18n(err)));
    }
    this.schedule(1000 * (this.data?.poll_s || DEFAULT_POLL_S));
  }

  watchHref(sid) {
    const admin = tokenClaims()?.role === "admin";
    return `/session/${encodeURIComponent(sid)}${admin ? "?observe" : ""}`;
  }

  card(s) {
    return el(
      "article",
      { class: "live-session", testid: "live-session", data: { sessionId: s.session_id, caseId: s.case_id }, attrs: { "aria-labelledby": `live-${s.session_id}` } },
      el(
        "div",
        { class: "live-head" },
        el("h3", { id: `live-${s.session_id}`, class: "case-no", text: s.case_id }),
        s.matter ? el("span", { class: "result-matter", text: s.matter }) : null,
        s.window ? el("span", { class: "muted", text: s.window }) : null,
        el("span", { class: "muted", i18n: "live.running_for", args: { d: dur(s.running_for_s) } }),
        s.recording ? el("span", { class: "chip chip-bad", i18n: "live.recording" }) : null,
        s.observers?.length ? el("span", { class: "chip chip-muted", testid: "live-observers", i18n: "live.observers", args: { n: s.observers.length } }) : null,
        el("span", { class: "spacer" }),
        el("a", { class: "button primary", href: this.watchHref(s.session_id), testid: "live-watch", i18n: "live.watch", attrs: { "aria-describedby": `live-${s.session_id}` } }),
      ),
      s.clerk ? el("div", { class: "muted live-clerk" }, el("span", { i18n: "live.started_by" }), " ", actorLine(s.clerk)) : null,
      s.participants.length
        ? dataTable({ columns: PARTICIPANT_COLUMNS, rows: s.participants, testid: "live-participants", rowTestid: "live-participant", caption: "live.participants", rowData: (p) => ({ participantId: p.participant_id, health: health(p.media) }) })
        : el("p", { class: "muted", i18n: "live.nobody" }),
      s.invitations?.length
        ? el(
            "ul",
            { class: "live-invites" },
            s.invitations.map((i) => el("li", { testid: "live-invitation", data: { status: i.status } }, i.dept ? el("span", { dept: i.dept }) : el("span", { text: i.reviewer_name || i.reviewer || "" }), " ", el("span", { class: `chip ${i.status === "unanswered" ? "chip-warn" : "chip-wait"}`, i18n: `status.${i.status}` }), " ", el("span", { class: "muted", text: dur(i.ringing_for_s) || "" }))),
          )
        : null,
    );
  }

  render() {
    const d = this.data;
    fill(this.status, el("span", { i18n: "live.updated", args: { n: d.sessions.length } }), " ", el("time", { ts: d.server_time, tsStyle: "seconds" }));
    fill(this.sessions, d.sessions.length ? d.sessions.map((s) => this.card(s)) : el("p", { class: "muted", testid: "live-empty", i18n: "live.none" }));
    fill(
      this.ringing,
      d.ringing.length ? dataTable({ columns: RINGING_COLUMNS, rows: d.ringing, testid: "live-ringing", rowTestid: "live-ringing-row", caption: "live.ringing" }) : el("p", { class: "muted", i18n: "live.none_ringing" }),
      d.ringing_more ? el("p", { class: "muted", i18n: "live.ringing_more" }) : null,
    );
  }
}
