// The clerk hears of every answer (issue #16 item 4): an invitation accepted, declined
// (with its reason) or unanswered raises a toast, a badge on the Invite tab (cleared when
// the tab is opened) and, if the clerk turned it on, a soft chime — however it was sent:
// from the counter (which remembers the invitations it made, in this tab's
// sessionStorage, so answers that came while the session page loaded are heard too) or
// from inside the session.
import { playChime, unlock } from "/static/sound.js";
import { deptLabel, el, toast } from "/static/ui.js";

const ANSWERS = ["accepted", "declined", "unanswered"];
const CHIME_KEY = "jr.answer_chime";
const NOTES = { accepted: [660, 880], declined: [880, 660], unanswered: [660, 660] };
const TONE = { accepted: "ok", declined: "warn", unanswered: "warn" };

function seenKey(sid) {
  return `jr.answers.${sid}`;
}

function loadSeen(sid) {
  try {
    return JSON.parse(sessionStorage.getItem(seenKey(sid)) || "{}");
  } catch {
    return {};
  }
}

// The counter, just before it opens the session it started: the invitations it made.
export function rememberInvitations(sid, invitations = []) {
  const seen = loadSeen(sid);
  for (const inv of invitations) seen[inv.invitation_id] = inv.status;
  sessionStorage.setItem(seenKey(sid), JSON.stringify(seen));
}

function who(inv) {
  const name = inv.responded_by?.name || inv.reviewer_name || "";
  const dept = inv.dept || inv.responded_by?.dept;
  return [name, dept ? deptLabel(dept) : ""].filter(Boolean).join(" · ");
}

export class AnswerWatch {
  // panels: makeTabs()'s handle; the Invite tab is `tabId`.
  constructor(sid, panels, { tabId = "invites" } = {}) {
    this.sid = sid;
    this.panels = panels;
    this.tabId = tabId;
    this.seen = loadSeen(sid);
    this.heard = 0;
    const badge = document.querySelector(`#tab-${tabId} .tab-badge`);
    if (badge) badge.dataset.testid = "invite-badge";
    this.panel = panels.panel(tabId);
    if (this.panel) this.panel.prepend(this.chimeSwitch());
  }

  chimeSwitch() {
    const box = el("input", { type: "checkbox", id: "answer-chime", testid: "answer-chime" });
    box.checked = localStorage.getItem(CHIME_KEY) === "on";
    box.addEventListener("change", () => {
      localStorage.setItem(CHIME_KEY, box.checked ? "on" : "off");
      if (box.checked) unlock(); // this click is the gesture Web Audio waits for
    });
    return el("label", { class: "switch answer-chime" }, box, el("span", { i18n: "answers.chime" }));
  }

  // Every invitation the page learns of (a `joined` snapshot or `invitation.updated`):
  // heard when its status became an answer since this tab last saw it.
  see(inv) {
    const before = this.seen[inv.invitation_id];
    this.seen[inv.invitation_id] = inv.status;
    sessionStorage.setItem(seenKey(this.sid), JSON.stringify(this.seen));
    if (before === undefined || before === inv.status || !ANSWERS.includes(inv.status)) return;
    this.hear(inv);
  }

  hear(inv) {
    const args = { name: who(inv), reason: inv.reason || "" };
    toast(`answers.${inv.status}`, args, TONE[inv.status]);
    this.panels.notify(this.tabId);
    if (localStorage.getItem(CHIME_KEY) === "on" && playChime(NOTES[inv.status])) {
      document.body.dataset.answerChimes = String(++this.heard);
    }
  }
}
