// The clerk's console at the counter: the case in hand, start a joint review in one
// click (optionally inviting departments at once), and the sessions still running.
import { api } from "/static/auth.js";
import { showHosts } from "/static/hosts.js";
import { inviteAll, TargetPicker } from "/static/picker.js";
import { bootPage, chip, clear, el, errorI18n } from "/static/ui.js";

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

async function main() {
  const claims = await bootPage(app, { roles: ["clerk", "admin"] });
  if (!claims) return;
  const picker = new TargetPicker(document.getElementById("picker"), { prefix: "start", note: false });
  const caseInput = document.getElementById("case-number");
  const error = document.getElementById("start-error");
  const form = document.getElementById("start-form");
  const button = form.querySelector("[data-testid=start-review]");
  await Promise.all([picker.load().catch((err) => showError(error, errorI18n(err))), loadSessions(claims)]);
  caseInput.focus();
  if (claims.role === "admin") showHosts(document.getElementById("hosts"));

  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const caseId = caseInput.value.trim();
    caseInput.setAttribute("aria-invalid", String(!CASE_ID.test(caseId)));
    if (!CASE_ID.test(caseId)) {
      showError(error, { i18n: caseId ? "counter.case_invalid" : "counter.case_required" });
      caseInput.focus();
  if (claims.role === "admin") showHosts(document.getElementById("hosts"));
      return;
    }
    clear(error);
    button.disabled = true;
    try {
      const body = {
        applicant_name: document.getElementById("applicant-name").value.trim() || undefined,
        matter: document.getElementById("matter").value.trim() || undefined,
      };
      const created = await api(`/api/cases/${encodeURIComponent(caseId)}/sessions`, { method: "POST", body });
      await inviteAll(created.session_id, picker.selected());
      location.href = `/session/${created.session_id}`;
    } catch (err) {
      showError(error, errorI18n(err));
      button.disabled = false;
    }
  });
}
main();
