// What the applicant keeps when the session ends (issue #16): the departments' decisions
// and every material still missing, on the page (it stays), printable (print CSS in
// phone.css keeps only this) and saveable as a text file made in the page.
import { api } from "/static/auth.js";
import { formatTs, t } from "/static/i18n.js";
import { deptLabel, el } from "/static/ui.js";

const TONE = { approve: "ok", materials_missing: "warn", refer: "wait", note: "muted" };

// The opinions of the session, as filed (GET .../opinions), oldest first.
async function opinionsOf(sid) {
  try {
    const { opinions } = await api(`/api/sessions/${encodeURIComponent(sid)}/opinions`);
    return [...opinions].sort((a, b) => a.created_at - b.created_at);
  } catch {
    return null;
  }
}

function who(o) {
  const dept = o.author?.dept ? deptLabel(o.author.dept) : "";
  return [dept, o.author?.name].filter(Boolean).join(" · ");
}

function missingOf(opinions) {
  const seen = new Set();
  const out = [];
  for (const o of opinions) {
    for (const m of o.missing || []) {
      if (seen.has(m)) continue;
      seen.add(m);
      out.push(m);
    }
  }
  return out;
}

// The same content as plain text (UTF-8, with a byte-order mark for Windows editors).
function asText(session, opinions, missing) {
  const lines = [t("summary.title"), `${t("prejoin.case")} ${session?.case_id || ""}`];
  if (session?.matter) lines.push(`${t("session.matter")} ${session.matter}`);
  if (session?.ended_at) lines.push(`${t("summary.ended_at")} ${formatTs(session.ended_at, "datetime")}`);
  lines.push("", t("summary.decisions"));
  for (const o of opinions) {
    lines.push(`- ${who(o)}: ${t(`opinion.decision_${o.decision}`)}`);
    if (o.refer_to) lines.push(`  ${t("opinion.refer_to")} ${deptLabel(o.refer_to)}`);
    if (o.note) lines.push(`  ${o.note}`);
  }
  if (!opinions.length) lines.push(t("summary.no_opinions"));
  lines.push("", t("summary.missing"));
  for (const m of missing) lines.push(`- ${m}`);
  if (!missing.length) lines.push(t("summary.nothing_missing"));
  return "\ufeff" + lines.join("\r\n") + "\r\n";
}

export async function showSummary(box, sid, session) {
  const opinions = await opinionsOf(sid);
  if (opinions === null) return;
  const missing = missingOf(opinions);
  const decisions = el(
    "ul",
    { class: "summary-decisions" },
    opinions.map((o) =>
      el(
        "li",
        { testid: "summary-decision", data: { decision: o.decision, dept: o.author?.dept || "" } },
        el("strong", { text: who(o) }),
        " ",
        el("span", { class: `chip chip-${TONE[o.decision] || "muted"}`, i18n: `opinion.decision_${o.decision}` }),
        o.refer_to ? el("div", {}, el("span", { i18n: "opinion.refer_to" }), " ", el("span", { dept: o.refer_to })) : null,
        o.note ? el("div", { class: "opinion-note", text: o.note }) : null,
      ),
    ),
  );
  const save = el("a", { class: "button quiet", testid: "summary-download", i18n: "summary.download", href: "#" });
  save.addEventListener("click", () => {
    const blob = new Blob([asText(session, opinions, missing)], { type: "text/plain;charset=utf-8" });
    save.href = URL.createObjectURL(blob);
    save.download = `${session?.case_id || "case"}_${t("summary.file")}.txt`;
    setTimeout(() => URL.revokeObjectURL(save.href), 10_000);
  });
  const section = el(
    "section",
    { class: "session-summary", testid: "session-summary", attrs: { "aria-labelledby": "summary-title" } },
    el("h2", { id: "summary-title", i18n: "summary.title" }),
    el("p", { class: "muted" }, el("span", { i18n: "prejoin.case" }), " ", el("strong", { text: session?.case_id || "" }), session?.matter ? ` · ${session.matter}` : ""),
    el("h3", { i18n: "summary.decisions" }),
    opinions.length ? decisions : el("p", { class: "muted", i18n: "summary.no_opinions" }),
    el("h3", { i18n: "summary.missing" }),
    missing.length
      ? el("ol", { class: "summary-missing", testid: "summary-missing" }, missing.map((m) => el("li", { text: m })))
      : el("p", { class: "muted", testid: "summary-missing", i18n: "summary.nothing_missing" }),
    el(
      "p",
      { class: "summary-actions" },
      el("button", { type: "button", class: "primary", testid: "summary-print", i18n: "summary.print", on: { click: () => window.print() } }),
      " ",
      save,
    ),
  );
  box.append(section);
  document.body.classList.add("has-summary");
}
