// The supervisor's "in progress now" card (/supervise; issue #15): GET /api/live, polled
// every `poll_s` (2 s) while the page is visible. Each session in progress with who is in
// (role, department, for how long) and their media health as the SFU counts it (loss,
// frame rate, freezes), who observes, what still rings and for how long; "Watch" opens
// the session page, where a supervisor observes receive-only (observers.js).
import { api } from "/static/auth.js";
import { actorLine, clear, el, errorI18n, fill } from "/static/ui.js";

const PAGE = 50;

function duration(s) {
  const m = Math.floor(s / 60);
  return m >= 60 ? `${Math.floor(m / 60)}h${String(m % 60).padStart(2, "0")}` : `${m}:${String(Math.floor(s % 60)).padStart(2, "0")}`;
}

// One participant's media health in a glance: bad loss or a frozen camera stands out.
function health(media) {
  if (!media) return el("span", { class: "chip chip-muted", i18n: "live.no_media" });
  const bad = media.frozen || media.loss >= 0.05;
  const text = [`${(media.loss * 100).toFixed(1)}%`, media.fps === null ? null : `${Math.round(media.fps)} fps`, media.freezes ? `❄${media.freezes}` : null];
  return el("span", {
    class: `chip ${bad ? "chip-bad" : "chip-ok"}`,
    testid: "live-health",
    text: text.filter(Boolean).join(" · "),
    data: { loss: String(media.loss), fps: String(media.fps ?? ""), frozen: media.frozen ? "1" : "0" },
  });
}

function person(p) {
  return el("li", { class: "live-person", testid: "live-person", data: { participantId: p.participant_id, state: p.state } },
    actorLine(p.identity), el("span", { class: "muted", text: duration(p.in_for_s) }), health(p.media));
}

function ringing(i) {
  const who = i.dept_name || i.reviewer_name || i.dept || i.reviewer || "";
  return el("li", { class: "live-ring", testid: "live-ringing", data: { invitationId: i.invitation_id, status: i.status } },
    el("span", { text: who }), el("span", { class: `chip chip-${i.status === "unanswered" ? "bad" : "warn"}`, i18n: `status.${i.status}` }),
    el("span", { class: "muted", text: duration(i.ringing_for_s) }));
}

function session(s) {
  return el("li", { class: "live-session", testid: "live-session", data: { sessionId: s.session_id } },
    el("div", { class: "result-head" },
      el("span", { class: "case-no", text: s.case_id }),
      s.matter ? el("span", { class: "result-matter", text: s.matter }) : null,
      el("span", { class: "muted", text: duration(s.running_for_s) }),
      s.observers.length ? el("span", { class: "chip chip-warn", i18n: "live.observers", args: { n: s.observers.length } }) : null,
      el("a", { class: "button", href: `/session/${encodeURIComponent(s.session_id)}`, testid: "live-watch", i18n: "live.watch" })),
    el("div", { class: "muted result-facts" }, s.window ? el("span", { text: s.window }) : null, actorLine(s.clerk)),
    el("ul", { class: "list live-people" }, s.participants.map(person)),
    s.invitations.length ? el("ul", { class: "list live-rings" }, s.invitations.map(ringing)) : null);
}

export class LiveCard {
  constructor(list, status) {
    this.list = list;
    this.status = status;
    this.timer = null;
    document.addEventListener("visibilitychange", () => document.hidden || this.refresh());
  }

  async refresh() {
    clearTimeout(this.timer);
    let wait = 2000;
    try {
      const live = await api(`/api/live?limit=${PAGE}`);
      wait = live.poll_s * 1000;
      fill(this.status, el("span", { i18n: "live.count", args: { n: live.sessions.length, r: live.ringing.length } }));
      clear(this.list);
      if (!live.sessions.length) this.list.append(el("li", { class: "muted", testid: "live-empty", i18n: "live.none" }));
      for (const s of live.sessions) this.list.append(session(s));
    } catch (err) {
      fill(this.status, el("span", { class: "form-error", ...errorI18n(err) }));
      wait = 10000;
    }
    if (!document.hidden) this.timer = setTimeout(() => this.refresh(), wait);
  }
}
