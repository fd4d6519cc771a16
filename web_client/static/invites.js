// Who is in the session and who was invited, with live status per invitee (pending ->
// ringing -> accepted; declined with its reason; unanswered -> re-invite or escalate).
// The counter's staff also invite from here and make the applicant's link (with QR).
import { api } from "/static/auth.js";
import { inviteAll, TargetPicker } from "/static/picker.js";
import { actorLine, chip, clear, department, departmentList, el, errorI18n, toast } from "/static/ui.js";

const OPEN = ["pending", "ringing", "unanswered"];

function suffix(id) {
  return id.includes("-") ? id.slice(id.indexOf("-") + 1) : id;
}

export class InvitesPanel {
  constructor(container, { sessionId, manage, session }) {
    this.sessionId = sessionId;
    this.manage = manage;
    this.session = session;
    this.invitations = new Map();
    this.participants = new Map();
    this.reviewers = [];
    this.people = el("ul", { class: "list compact", testid: "participant-list" });
    this.list = el("ul", { class: "list compact", testid: "invitation-list" });
    this.error = el("p", { class: "form-error", attrs: { role: "alert" } });
    // What happens now first (statuses, who is here), then inviting more, then the link.
    container.append(
      el("h3", { class: "panel-sub first", i18n: "invites.status_heading" }),
      this.list,
      el("h3", { class: "panel-sub", i18n: "invites.people_heading" }),
      this.people,
    );
    if (manage) container.append(this.inviteForm(), this.applicantSection());
    this.renderList();
    this.setParticipant({ participant_id: "", state: "left" });
  }

  inviteForm() {
    const box = el("div", { class: "invite-form" });
    this.picker = new TargetPicker(box, { prefix: "invite" });
    this.picker
      .load()
      .then(() => (this.reviewers = this.picker.directory.reviewers))
      .catch((err) => this.error.append(el("span", errorI18n(err))));
    const button = el("button", { type: "button", class: "primary", testid: "invite", i18n: "invites.invite" });
    button.addEventListener("click", async () => {
      clear(this.error);
      const targets = this.picker.selected();
      if (!targets.length) {
        this.error.append(el("span", { i18n: "invites.choose_first" }));
        return;
      }
      button.disabled = true;
      await this.send(targets);
      this.picker.reset();
      button.disabled = false;
    });
    return el("section", { class: "panel-section" }, box, this.error, button);
  }

  async send(targets) {
    const errors = await inviteAll(this.sessionId, targets);
    for (const err of errors) this.error.append(el("div", errorI18n(err)));
    if (!errors.length) toast("invites.sent", { n: targets.length }, "ok");
  }

  // -- invitations -------------------------------------------------------------------
  setInvitations(list) {
    for (const inv of list) this.invitations.set(inv.invitation_id, inv);
    this.renderList();
  }

  update(inv) {
    this.invitations.set(inv.invitation_id, inv);
    this.renderList();
  }

  renderList() {
    const items = [...this.invitations.values()].sort((a, b) => a.created_at - b.created_at);
    clear(this.list);
    if (!items.length) this.list.append(el("li", { class: "muted", i18n: "invites.none" }));
    for (const inv of items) this.list.append(this.row(inv));
  }

  row(inv) {
    const name = inv.reviewer
      ? el("strong", { text: inv.reviewer_name || inv.reviewer })
      : el("span", {}, el("strong", { dept: inv.dept }), inv.level ? el("span", { class: "muted", i18n: `level.${inv.level}_suffix` }) : null);
    const detail = el("div", { class: "muted inv-detail" });
    if (inv.responded_by && ["accepted", "declined"].includes(inv.status)) {
      detail.append(el("span", { text: inv.responded_by.name }), " ", el("time", { ts: inv.responded_at }));
    } else if (inv.status === "ringing" && inv.rang_at) {
      detail.append(el("span", { i18n: "invites.rang_at" }), " ", el("time", { ts: inv.rang_at }));
    } else if (inv.status === "unanswered") {
      detail.append(el("span", { i18n: "invites.unanswered_hint" }));
    } else {
      detail.append(el("span", { i18n: "invites.invited_at" }), " ", el("time", { ts: inv.created_at }));
    }
    const reason = inv.status === "declined" && inv.reason
      ? el("div", { class: "inv-reason", testid: "decline-reason-shown" }, el("span", { i18n: "invites.reason" }), " ", el("span", { text: inv.reason }))
      : null;
    const li = el(
      "li",
      { testid: "invitation-status", data: { invitationId: inv.invitation_id, status: inv.status, dept: inv.dept || "", reviewer: inv.reviewer || "" } },
      el("div", { class: "grow" }, name, detail, reason),
      chip(inv.status),
    );
    if (this.manage && ["unanswered", "declined"].includes(inv.status)) li.append(this.followUp(inv, li));
    return li;
  }

  // Re-invite the same target, or escalate: the other level's department, or a person.
  followUp(inv, li) {
    const again = el("button", { type: "button", class: "quiet small", testid: "reinvite", i18n: "invites.reinvite" });
    again.addEventListener("click", async () => {
      again.disabled = true;
      await this.send([inv.dept ? { dept: inv.dept, level: inv.level || undefined } : { reviewer: inv.reviewer }]);
    });
    const escalate = el("button", { type: "button", class: "quiet small", testid: "escalate", i18n: "invites.escalate" });
    escalate.addEventListener("click", () => {
      escalate.disabled = true;
      li.append(this.escalateForm(inv));
    });
    return el("div", { class: "inv-actions" }, again, escalate);
  }

  escalateForm(inv) {
    const mine = inv.dept ? department(inv.dept) : null;
    const others = departmentList()
      .filter((d) => d.id !== inv.dept && (!mine || d.level !== mine.level))
      .sort((a, b) => Number(mine && suffix(b.id) === suffix(mine.id)) - Number(mine && suffix(a.id) === suffix(mine.id)));
    // Never the one who just declined (nor the named reviewer who did not answer).
    const people = this.reviewers.filter(
      (r) => r.sub !== inv.reviewer && r.sub !== inv.responded_by?.sub && (!inv.dept || r.dept === inv.dept),
    );
    const select = el(
      "select",
      { testid: "escalate-target", aria: "invites.escalate_to" },
      others.map((d) => el("option", { value: `dept:${d.id}`, dept: d.id })),
      people.map((r) => el("option", { value: `reviewer:${r.sub}`, text: r.name })),
    );
    const go = el("button", { type: "button", class: "primary small", testid: "escalate-confirm", i18n: "invites.invite" });
    go.addEventListener("click", async () => {
      const [kind, id] = select.value.split(":");
      go.disabled = true;
      await this.send([kind === "dept" ? { dept: id } : { reviewer: id }]);
    });
    return el("div", { class: "escalate" }, el("label", { i18n: "invites.escalate_to" }), el("div", { class: "row" }, select, go));
  }

  // -- participants ------------------------------------------------------------------
  setParticipant(p) {
    if (p.state === "left") this.participants.delete(p.participant_id);
    else if (!p.identity) return;
    else this.participants.set(p.participant_id, p);
    clear(this.people);
    if (!this.participants.size) this.people.append(el("li", { class: "muted", i18n: "invites.only_you" }));
    for (const x of this.participants.values()) {
      const state = x.state === "disconnected" ? "reconnecting" : "joined";
      this.people.append(
        el("li", { testid: "participant", data: { participantId: x.participant_id, state } }, el("div", { class: "grow" }, actorLine(x.identity)), chip(state)),
      );
    }
  }

  // -- the applicant's link -----------------------------------------------------------
  applicantSection() {
    const out = el("div", { class: "applicant-out" });
    const name = el("input", { id: "applicant-link-name", value: this.session.applicant_name || "", maxLength: 100 });
    const button = el("button", { type: "button", class: "quiet", testid: "applicant-link", i18n: "applicant.make_link" });
    const error = el("p", { class: "form-error", attrs: { role: "alert" } });
    button.addEventListener("click", async () => {
      clear(error);
      button.disabled = true;
      try {
        const link = await api(`/api/sessions/${this.sessionId}/applicant-link`, { method: "POST", body: { name: name.value.trim() || undefined } });
        this.showLink(out, link);
      } catch (err) {
        error.append(el("span", errorI18n(err)));
      } finally {
        button.disabled = false;
      }
    });
    return el(
      "section",
      { class: "panel-section" },
      el("h3", { class: "panel-sub", i18n: "applicant.heading" }),
      el("div", { class: "field" }, el("label", { htmlFor: "applicant-link-name", i18n: "applicant.name" }), name),
      button,
      error,
      out,
    );
  }

  showLink(out, link) {
    // The server draws the QR code (segno) as inline SVG, without an xmlns: parse it as
    // HTML (which puts <svg> in the SVG namespace), keep only the <svg> element.
    const svg = new DOMParser().parseFromString(link.qr_svg, "text/html").querySelector("svg");
    const qr = el("div", { class: "qr", testid: "applicant-qr", attrs: { role: "img" }, aria: "applicant.qr_label" });
    if (svg) qr.append(document.importNode(svg, true));
    // The short link (/j/<code>): what the QR code carries, and what is easy to send.
    const short = link.short_url || link.url;
    const url = el("input", { id: "applicant-url", testid: "applicant-url", readOnly: true, value: short });
    const copy = el("button", { type: "button", class: "quiet small", testid: "copy-link", i18n: "applicant.copy" });
    copy.addEventListener("click", async () => {
      url.select();
      try {
        await navigator.clipboard.writeText(short);
        toast("applicant.copied", null, "ok");
      } catch {
        toast("applicant.copy_manually", null, "warn");
      }
    });
    clear(out).append(
      qr,
      el("label", { htmlFor: "applicant-url", i18n: "applicant.url" }),
      el("div", { class: "row" }, url, copy),
      el("p", { class: "muted" }, el("span", { i18n: "applicant.expires" }), " ", el("time", { ts: link.expires_at, tsStyle: "datetime" })),
      el("p", { class: "muted", i18n: "applicant.short_hint" }),
    );
    qr.scrollIntoView({ block: "nearest" }); // where the clerk sees it, not below the fold
  }
}
