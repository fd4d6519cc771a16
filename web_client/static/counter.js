// The clerk's console at the counter: the case in hand (typed, or from the approval
// system's deep link: deeplink.js), the departments to invite beside Start, one call that
// starts the session and invites (POST /api/cases/{case}/sessions with `invite`), and the
// sessions still running.
import { api } from "/static/auth.js";
import { rememberInvitations } from "/static/answers.js";
import { dropStart, readDeepLink, startsAtOnce } from "/static/deeplink.js";
import { showHosts } from "/static/hosts.js";
import { lang, onLangChange } from "/static/i18n.js";
import { TargetPicker } from "/static/picker.js";
import { bootPage, chip, clear, deptLabel, el, errorI18n, fill } from "/static/ui.js";

const CASE_ID = /^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$/;
const app = document.getElementById("app");

function showError(target, props) {
  clear(target).append(el("span", props));
}

async function loadSessions(claims) {
  const list = document.getElementById("active");
  const datalist = document.getElementById("recent-cases");
  let sessions = [];
  try {
    ({ sessions } = await api("/api/sessions?limit=50"));
  } catch (err) {
    showError(list, errorI18n(err));
    return;
  }
  const cases = [...new Set(sessions.map((s) => s.case_id))];
  datalist.replaceChildren(...cases.map((c) => el("option", { value: c })));
  const mine = sessions.filter((s) => s.status === "active" && s.created_by.sub === claims.sub);
  clear(list);
  if (!mine.length) list.append(el("li", { class: "muted", i18n: "counter.none_active" }));
  for (const s of mine) {
    list.append(
      el(
        "li",
        { testid: "active-session", data: { sessionId: s.session_id } },
        el(
          "div",
          { class: "grow" },
          el("div", { class: "case-no", text: s.case_id }),
          el("div", { class: "muted" }, s.matter || "", s.matter ? " · " : "", el("time", { ts: s.created_at })),
        ),
        chip(s.status),
        el("a", { class: "button quiet", href: `/case?${new URLSearchParams({ case: s.case_id })}`, i18n: "track.open", testid: "session-track" }),
        el("a", { class: "button", href: `/session/${s.session_id}`, i18n: "counter.return", testid: "resume-session" }),
      ),
    );
  }
}

// Who will be invited, next to Start (departments and the named reviewer).
function summarize(picker, summary) {
  if (!picker.reviewer) return; // the directory did not load: the error says so
  const targets = picker.selected();
  const names = targets.map((x) => (x.dept ? deptLabel(x.dept) : picker.reviewer.selectedOptions[0]?.textContent || x.reviewer));
  if (!names.length) fill(summary, el("span", { class: "muted", i18n: "counter.nobody_yet" }));
  else fill(summary, el("span", { i18n: "counter.will_invite", args: { n: names.length } }), " ", el("strong", { text: new Intl.ListFormat(lang()).format(names) }));
}

// What the deep link filled in, and what it could not (shown, never dropped silently).
function applyLink(link, picker) {
  for (const [id, value] of Object.entries(link.values)) document.getElementById(id).value = value;
  for (const id of link.invalid) document.getElementById(id).setAttribute("aria-invalid", "true");
  for (const dept of link.known) picker.boxes.get(dept).checked = true;
  const notes = document.getElementById("link-notes");
  const items = [];
  if (link.invalid.length) items.push(el("p", { i18n: "counter.link_invalid", testid: "deeplink-invalid" }));
  if (link.unknown.length) {
    items.push(
      el("p", { testid: "deeplink-unknown", data: { depts: link.unknown.join(",") } }, el("span", { i18n: "counter.link_unknown" }), " ", el("code", { text: link.unknown.join(", ") })),
    );
  }
  if (link.start && !startsAtOnce(link)) items.push(el("p", { i18n: "counter.link_held", testid: "deeplink-held" }));
  notes.hidden = !items.length;
  fill(notes, items);
}

async function main() {
  const claims = await bootPage(app, { roles: ["clerk", "admin"] });
  if (!claims) return;
  const picker = new TargetPicker(document.getElementById("picker"), { prefix: "start", note: false });
  const caseInput = document.getElementById("case-number");
  const error = document.getElementById("start-error");
  const form = document.getElementById("start-form");
  const button = form.querySelector("[data-testid=start-review]");
  const alone = document.getElementById("start-alone");
  const summary = document.getElementById("invite-summary");
  await Promise.all([picker.load().catch((err) => showError(error, errorI18n(err))), loadSessions(claims)]);
  if (claims.role === "admin") showHosts(document.getElementById("hosts"));
  const link = readDeepLink(location.search, picker.directory.departments);
  applyLink(link, picker);
  summarize(picker, summary);
  picker.container.addEventListener("change", () => summarize(picker, summary));
  onLangChange(() => summarize(picker, summary));

  // Enter in a field submits: it starts only with someone to invite. Starting alone is
  // the second button, a deliberate choice.
  async function start(targets) {
    const caseId = caseInput.value.trim();
    caseInput.setAttribute("aria-invalid", String(!CASE_ID.test(caseId)));
    if (!CASE_ID.test(caseId)) {
      showError(error, { i18n: caseId ? "counter.case_invalid" : "counter.case_required" });
      caseInput.focus();
      return;
    }
    clear(error);
    button.disabled = alone.disabled = true;
    try {
      const value = (id) => document.getElementById(id).value.trim() || undefined;
      const body = { applicant_name: value("applicant-name"), matter: value("matter"), window: value("window"), invite: targets };
      const created = await api(`/api/cases/${encodeURIComponent(caseId)}/sessions`, { method: "POST", body });
      rememberInvitations(created.session_id, created.invitations);
      location.href = `/session/${created.session_id}`;
    } catch (err) {
      showError(error, errorI18n(err));
      button.disabled = alone.disabled = false;
    }
  }

  form.addEventListener("submit", (ev) => {
    ev.preventDefault();
    const targets = picker.selected();
    if (!targets.length) {
      showError(error, { i18n: "counter.choose_or_alone", testid: "start-needs-invite" });
      picker.container.querySelector("input[type=checkbox]")?.focus();
      return;
    }
    start(targets);
  });
  alone.addEventListener("click", () => start([]));

  dropStart();
  if (startsAtOnce(link)) start(picker.selected());
  else (link.values["case-number"] ? button : caseInput).focus();
}
main();
