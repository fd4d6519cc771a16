// A case's process tracking (/case?case=<id>, 办件跟踪): every joint review of the case in
// order, each with its invitations and their answers (who, when, how long it took), its
// opinions, its document stills, its exceptions (a recording that failed, a case file
// sealed without its opinion sheet, the supervisors' exceptions) and its seal, and the
// opinion sheet to print (sheet.js). For clerks, supervisors and admins, and reviewers
// for the sessions their department was invited to (the server filters).
//
// HTTP: GET /api/cases/{case}/track (a page of sessions, oldest first; "more" follows
// `next_cursor`), GET /api/sessions/{sid}/opinion-sheet (the PDF).
import { api, tokenClaims } from "/static/auth.js";
import { caseKnown, LISTERS } from "/static/expected.js";
import { has } from "/static/i18n.js";
import { printButton } from "/static/sheet.js";
import { actorLine, bootPage, chip, clear, el, errorI18n, fill } from "/static/ui.js";

const CASE_ID = /^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$/;
const REPLAYERS = ["supervisor", "admin"]; // the replay console (/supervise) is theirs
const $ = (id) => document.getElementById(id);

let shown = 0;
let cursor = null;
let caseId = null;

function when(ts) {
  return ts ? el("time", { ts, tsStyle: "datetime" }) : el("span", { class: "muted", text: "—" });
}

function seconds(from, to) {
  return from && to ? el("span", { class: "muted", i18n: "track.after_s", args: { s: Math.max(0, Math.round(to - from)) } }) : null;
}

function target(inv) {
  return inv.reviewer ? el("span", { text: inv.reviewer_name || inv.reviewer }) : el("span", { dept: inv.dept });
}

function invitations(list) {
  if (!list.length) return el("p", { class: "track-none", i18n: "track.no_invitations" });
  const head = ["track.col_target", "track.col_invited", "track.col_answer", "track.col_by", "track.col_answered"];
  return el(
    "table",
    { class: "track-table" },
    el("thead", {}, el("tr", {}, head.map((key) => el("th", { i18n: key, attrs: { scope: "col" } })))),
    el(
      "tbody",
      {},
      list.map((inv) =>
        el(
          "tr",
          { testid: "track-invitation", data: { invitationId: inv.invitation_id, status: inv.status, dept: inv.dept || "" } },
          el("td", {}, target(inv)),
          el("td", {}, when(inv.created_at)),
          el("td", {}, chip(inv.status), inv.reason ? el("div", { class: "muted", text: inv.reason }) : null),
          el("td", {}, inv.responded_by ? actorLine(inv.responded_by) : el("span", { class: "muted", text: "—" })),
          el("td", {}, inv.responded_at ? when(inv.responded_at) : when(inv.unanswered_at), " ", seconds(inv.created_at, inv.responded_at)),
        ),
      ),
    ),
  );
}

function opinions(list) {
  if (!list.length) return el("p", { class: "track-none", i18n: "track.no_opinions" });
  return list.map((o) =>
    el(
      "div",
      { class: "track-opinion", testid: "track-opinion", data: { decision: o.decision } },
      el("div", {}, el("strong", { i18n: `opinion.decision_${o.decision}` }), " · ", actorLine(o.author), " · ", when(o.created_at)),
      o.missing?.length ? el("div", {}, el("span", { i18n: "opinion.missing_list" }), el("span", { text: o.missing.join("；") })) : null,
      o.refer_to ? el("div", {}, el("span", { i18n: "opinion.refer_to" }), el("span", { dept: o.refer_to })) : null,
      o.note ? el("div", { text: o.note }) : null,
    ),
  );
}

function stills(list) {
  if (!list.length) return el("p", { class: "track-none", i18n: "track.no_stills" });
  return list.map((s) => el("div", { class: "track-still", testid: "track-still" }, when(s.created_at), " · ", actorLine(s.taken_by)));
}

function exceptions(list) {
  if (!list.length) return el("p", { class: "track-none", testid: "track-no-exceptions", i18n: "track.no_exceptions" });
  return list.map((e) => {
    const key = `track.exc_${e.type.replace(/\./g, "_")}`;
    const label = has(key) ? { i18n: key } : { i18n: "track.exc_other", args: { type: e.type } };
    const detail = e.data?.message || e.data?.code || "";
    return el("div", { class: "track-exception", testid: "track-exception", data: { type: e.type } }, when(e.ts), " · ", el("strong", label), detail ? el("span", { class: "muted", text: ` ${detail}` }) : null);
  });
}

function seal(t) {
  if (!t.sealed_at) return el("p", { class: "track-none", i18n: "track.not_sealed" });
  return el(
    "p",
    { class: "track-seal", testid: "track-seal" },
    el("span", { i18n: "track.sealed_at" }),
    " ",
    when(t.sealed_at),
    " · ",
    el("span", { i18n: "track.chain_head" }),
    " ",
    el("code", { text: (t.chain_head || "").slice(0, 16), attrs: { title: t.chain_head || "" } }),
  );
}

function part(key, ...children) {
  return el("section", { class: "track-part" }, el("h4", { i18n: key }), ...children);
}

function sessionCard(t, n, claims) {
  const s = t.session;
  const open = REPLAYERS.includes(claims.role)
    ? el("a", { class: "button quiet", href: `/supervise?session=${encodeURIComponent(s.session_id)}`, i18n: "track.replay", testid: "track-replay" })
    : s.status === "active" && claims.role !== "supervisor"
      ? el("a", { class: "button quiet", href: `/session/${encodeURIComponent(s.session_id)}`, i18n: "counter.return", testid: "track-join" })
      : null;
  return el(
    "li",
    { class: "card track-session", testid: "track-session", data: { sessionId: s.session_id, index: String(n), status: s.status } },
    el(
      "div",
      { class: "track-head" },
      el("h3", { i18n: "track.session_n", args: { n } }),
      chip(s.status),
      t.end_reason === "idle" ? el("span", { class: "chip chip-warn", i18n: "track.ended_idle" }) : null,
      el("span", { class: "muted" }, when(s.created_at), " – ", s.ended_at ? when(s.ended_at) : el("span", { i18n: "status.active" })),
      el("span", { class: "spacer" }),
      printButton(s.session_id, s.case_id),
      open,
    ),
    el(
      "div",
      { class: "track-facts muted" },
      s.matter ? el("span", { text: s.matter }) : null,
      s.applicant_name ? el("span", {}, el("span", { i18n: "session.applicant" }), " ", el("span", { text: s.applicant_name })) : null,
      s.window ? el("span", { text: s.window }) : null,
      actorLine(s.created_by),
    ),
    part("track.invitations", invitations(t.invitations)),
    part("track.opinions", opinions(t.opinions)),
    part("track.stills", stills(t.snapshots)),
    part("track.exceptions", exceptions(t.exceptions)),
    part("track.seal", seal(t)),
  );
}

async function loadPage(claims) {
  const q = new URLSearchParams();
  if (cursor) q.set("cursor", cursor);
  const page = await api(`/api/cases/${encodeURIComponent(caseId)}/track${cursor ? `?${q}` : ""}`);
  const list = $("track");
  for (const t of page.sessions) {
    shown += 1;
    list.append(sessionCard(t, shown, claims));
  }
  cursor = page.next_cursor;
  $("track-more").hidden = !cursor;
  fill($("track-count"), el("span", { i18n: "track.count", args: { n: shown } }));
}

async function show(id, claims, push) {
  const error = $("track-error");
  clear(error);
  $("track-case").setAttribute("aria-invalid", String(!CASE_ID.test(id)));
  if (!CASE_ID.test(id)) return fill(error, el("span", { i18n: "supervise.case_invalid" }));
  if (push) history.pushState({ case: id }, "", `/case?${new URLSearchParams({ case: id })}`);
  caseId = id;
  shown = 0;
  cursor = null;
  clear($("track"));
  clear($("track-count"));
  $("track-more").hidden = true;
  try {
    // A case never seen: said without a 404 in the console, where the list allows it.
    if (!LISTERS.includes(claims.role) || (await caseKnown(id))) await loadPage(claims);
    if (!shown) $("track").append(el("li", { class: "empty", testid: "track-empty", i18n: "track.none" }));
  } catch (err) {
    fill(error, el("span", err.code === "case_not_found" ? { i18n: "track.none" } : errorI18n(err)));
  }
}

async function main() {
  const claims = await bootPage($("app"), { roles: ["clerk", "admin", "supervisor", "reviewer"] });
  if (!claims) return;
  const input = $("track-case");
  $("track-form").addEventListener("submit", (ev) => {
    ev.preventDefault();
    show(input.value.trim(), claims, true);
  });
  $("track-more").addEventListener("click", async () => {
    $("track-more").disabled = true;
    try {
      await loadPage(tokenClaims());
    } catch (err) {
      fill($("track-error"), el("span", errorI18n(err)));
    } finally {
      $("track-more").disabled = false;
    }
  });
  window.addEventListener("popstate", () => {
    const id = new URL(location.href).searchParams.get("case");
    if (id) show(id, claims, false);
  });
  const id = new URL(location.href).searchParams.get("case");
  if (id) {
    input.value = id;
    await show(id, claims, false);
  } else input.focus();
}

main();
