// The supervisor's console (/supervise): find past joint reviews by case number, date
// range and department, open one and replay it at once from its per-track recordings
// (replay.js). `?session=<sid>` opens a replay directly; Back returns to the list.
//
// HTTP: GET /api/sessions?since&until&limit (newest first; the first page of LIMIT is the
// search's answer: narrow the dates for older ones), GET /api/sessions?case&limit=1 (is
// there such a case: no 404 for a case never seen), GET /api/cases/{case}/sessions (the
// case's sessions and their invitations, every page, following `next_cursor`), GET
// /api/sessions/{sid}/invitations (the
// departments of each listed session: the list API has no department filter, so it is
// applied here), GET /api/sessions/{sid}/recording (the replay description; the server
// writes each opening into the case timeline as `replay.viewed`; its markers come a page at
// a time: the rest from GET /api/sessions/{sid}/recording/markers). A session in progress
// comes with its timeline so far and no tracks (nothing is sealed yet); one that has just
// ended answers 409 `recording_sealing` until its case file is sealed: the page asks the
// case's track (expected.js) until then, saying so, and opens it once sealed.
// Beside the replay, the case file to take away (casefile.js: GET
// /api/sessions/{sid}/casefile, read at the same time as the description).
// `&t=<seconds>` opens the replay at that moment (an exception's offset_s).
//
// Beside the search, tabs (tabs.js; `?tab=` keeps the choice): Statistics (stats.js),
// Exceptions (exceptions.js, new ones live from the socket) and Live (live.js).
import { ApiError, api } from "/static/auth.js";
import { CaseFilePanel } from "/static/casefile.js";
import { ExceptionsTab, loadNames } from "/static/exceptions.js";
import { onLangChange } from "/static/i18n.js";
import { LiveTab } from "/static/live.js";
import { ReplayPlayer } from "/static/replay.js";
import { watermark } from "/static/watermark.js";
import { caseKnown, sealedAt } from "/static/expected.js";
import { Signal } from "/static/socket.js";
import { StatsTab } from "/static/stats.js";
import { makeTabs } from "/static/tabs.js";
import { actorLine, bootPage, chip, clear, departmentList, el, errorI18n, fatal, fill } from "/static/ui.js";

const CASE_ID = /^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$/;
const LIMIT = 100;
const PARALLEL = 6;
const $ = (id) => document.getElementById(id);

// The media node closes and seals the files within seconds of the end.
const SEALING_RETRY_MS = 1000;
const SEALING_TRIES = 60;

let player = null;
let caseFile = null;
let sealingRetry = null;
let unmark = null; // stops the viewer's watermark (watermark.js)

function showError(target, props) {
  fill(target, el("span", props));
}

// Up to PARALLEL requests at a time.
async function mapLimited(items, fn) {
  const out = new Array(items.length);
  let next = 0;
  const worker = async () => {
    while (next < items.length) {
      const i = next++;
      out[i] = await fn(items[i]);
    }
  };
  await Promise.all(Array.from({ length: Math.min(PARALLEL, items.length) }, worker));
  return out;
}

function dayStart(value) {
  return value ? new Date(`${value}T00:00:00`).getTime() / 1000 : null;
}

function dayEnd(value) {
  return value ? new Date(`${value}T23:59:59.999`).getTime() / 1000 : null;
}

function deptsOf(invitations) {
  const ids = new Set();
  for (const inv of invitations) {
    if (inv.dept) ids.add(inv.dept);
    if (inv.responded_by?.dept) ids.add(inv.responded_by.dept);
  }
  return [...ids];
}

// -- search -------------------------------------------------------------------------------
async function search() {
  const error = $("search-error");
  clear(error);
  const caseId = $("search-case").value.trim();
  const since = dayStart($("search-since").value);
  const until = dayEnd($("search-until").value);
  const dept = $("search-dept").value;
  $("search-case").setAttribute("aria-invalid", String(Boolean(caseId) && !CASE_ID.test(caseId)));
  if (caseId && !CASE_ID.test(caseId)) return showError(error, { i18n: "supervise.case_invalid" });
  if (since !== null && until !== null && since > until) return showError(error, { i18n: "supervise.range_invalid" });
  const list = $("results");
  fill(list, el("li", { class: "muted", i18n: "supervise.loading" }));
  let rows;
  try {
    if (caseId) {
      const view = (await caseKnown(caseId)) ? await caseSessions(caseId) : { sessions: [], invitations: [] };
      rows = view.sessions
        .filter((s) => (since === null || s.created_at >= since) && (until === null || s.created_at <= until))
        .sort((a, b) => b.created_at - a.created_at)
        .map((s) => ({ session: s, invitations: view.invitations.filter((i) => i.session_id === s.session_id) }));
    } else {
      const q = new URLSearchParams({ limit: String(LIMIT) });
      if (since !== null) q.set("since", String(since));
      if (until !== null) q.set("until", String(until));
      const { sessions } = await api(`/api/sessions?${q}`);
      rows = await mapLimited(sessions, async (s) => ({
        session: s,
        invitations: (await api(`/api/sessions/${encodeURIComponent(s.session_id)}/invitations`)).invitations,
      }));
    }
  } catch (err) {
    clear(list);
    return showError(error, errorI18n(err));
  }
  if (dept) rows = rows.filter((r) => deptsOf(r.invitations).includes(dept));
  renderResults(rows);
}

function renderResults(rows) {
  const list = $("results");
  fill($("results-count"), el("span", { i18n: "supervise.results_count", args: { n: rows.length } }));
  clear(list);
  if (!rows.length) {
    list.append(el("li", { class: "muted", testid: "session-empty", i18n: "supervise.none_found" }));
    return;
  }
  for (const { session: s, invitations } of rows) {
    const minutes = s.ended_at ? Math.max(1, Math.round((s.ended_at - s.created_at) / 60)) : null;
    list.append(
      el(
        "li",
        { class: "result", testid: "session-row", data: { sessionId: s.session_id, caseId: s.case_id, status: s.status } },
        el(
          "div",
          { class: "grow" },
          el("div", { class: "result-head" }, el("span", { class: "case-no", text: s.case_id }), chip(s.status), s.matter ? el("span", { class: "result-matter", text: s.matter }) : null),
          el(
            "div",
            { class: "muted result-facts" },
            el("time", { ts: s.created_at, tsStyle: "datetime" }),
            minutes ? el("span", { i18n: "supervise.minutes", args: { n: minutes } }) : null,
            s.applicant_name ? el("span", {}, el("span", { i18n: "session.applicant" }), " ", el("span", { text: s.applicant_name })) : null,
            s.window ? el("span", { text: s.window }) : null,
            actorLine(s.created_by),
          ),
          el("div", { class: "result-depts" }, deptsOf(invitations).map((d) => el("span", { class: "chip chip-muted", dept: d }))),
        ),
        el("button", { type: "button", class: "primary", testid: "session-open", i18n: "supervise.open", on: { click: () => openReplay(s.session_id, true) } }),
      ),
    );
  }
}

// Every session of a case (and their invitations), page after page.
async function caseSessions(caseId) {
  const path = `/api/cases/${encodeURIComponent(caseId)}/sessions`;
  const view = { sessions: [], invitations: [] };
  let cursor = null;
  do {
    // The server's own page size (page_default): no limit here can exceed its page_max.
    const page = await api(cursor ? `${path}?${new URLSearchParams({ cursor })}` : path);
    view.sessions.push(...page.sessions);
    view.invitations.push(...page.invitations);
    cursor = page.next_cursor;
  } while (cursor);
  return view;
}

// -- replay -------------------------------------------------------------------------------
// The description; with `markers`, every page of its timeline markers (a renewal of the
// media grants needs its tracks only).
async function describe(sid, { markers = false } = {}) {
  const base = `/api/sessions/${encodeURIComponent(sid)}/recording`;
  const desc = await api(base);
  let cursor = markers ? desc.markers_next_cursor : null;
  while (cursor) {
    const page = await api(`${base}/markers?${new URLSearchParams({ cursor })}`);
    desc.markers.push(...page.markers);
    cursor = page.next_cursor;
  }
  return desc;
}

async function openReplay(sid, push, tries = 0, at = null) {
  const moment = at === null ? "" : `&t=${Number(at).toFixed(1)}`;
  if (push) history.pushState({ session: sid }, "", `/supervise?session=${encodeURIComponent(sid)}${moment}`);
  closeReplay();
  document.body.dataset.view = "replay";
  $("search-view").hidden = true;
  $("replay-view").hidden = false;
  const body = $("replay-body");
  fill(body, el("p", { class: "muted replay-loading", i18n: "supervise.loading" }));
  const panel = new CaseFilePanel(sid);
  caseFile = panel;
  let desc;
  try {
    // Just ended: the description answers 409 until the case file is sealed, so the
    // case's track is asked first (expected.js) and the page says "being sealed".
    const { session } = await api(`/api/sessions/${encodeURIComponent(sid)}`);
    if (session.status === "ended" && (await sealedAt(session.case_id, sid)) === null) {
      throw new ApiError(409, "recording_sealing");
    }
    desc = await describe(sid, { markers: true });
  } catch (err) {
    if (caseFile !== panel) return; // closed, or another replay opened, meanwhile
    const sealing = err.code === "recording_sealing" && tries < SEALING_TRIES;
    const kind = sealing ? "notice-info" : "notice-bad";
    fill(body, el("section", { class: `card notice ${kind}`, testid: "page-error", data: { code: err.code }, attrs: { role: sealing ? "status" : "alert" } }, el("p", { class: "notice-text", ...errorI18n(err) })));
    if (sealing) sealingRetry = setTimeout(() => openReplay(sid, false, tries + 1, at), SEALING_RETRY_MS);
    return;
  }
  if (caseFile !== panel) return;
  const s = desc.session;
  fill(
    $("replay-facts"),
    el("strong", { class: "case-no fact-case", text: s.case_id, testid: "replay-case" }),
    s.matter ? el("span", { class: "fact", text: s.matter }) : null,
    el("time", { class: "fact muted", ts: s.created_at, tsStyle: "datetime" }),
    s.status === "active" ? el("span", { class: "chip chip-warn", testid: "replay-live", i18n: "replay.live" }) : null,
  );
  document.body.dataset.recording = desc.recording.state;
  player = new ReplayPlayer(body, desc, { onSourcesExpired: () => describe(sid) });
  unmark = watermark(body, desc.viewer); // who is watching, over every tile
  panel.attach(body.querySelector(".replay-side") || body, desc);
  if (at !== null && Number.isFinite(at)) {
    player.seek(Math.min(Math.max(0, at), player.duration));
    // The event at that moment (an exception's cause: the decline, the end...) in the details.
    const near = desc.markers.reduce((best, m) => (!best || Math.abs(m.t - at) < Math.abs(best.t - at) ? m : best), null);
    if (near && Math.abs(near.t - at) <= 1) player.select(near, false);
  }
  window.jr = { ...window.jr, player, caseFile };
}

function momentOf(url) {
  const v = url.searchParams.get("t");
  return v === null || v === "" || !Number.isFinite(Number(v)) ? null : Number(v);
}

function closeReplay() {
  clearTimeout(sealingRetry);
  sealingRetry = null;
  if (player) player.destroy();
  player = null;
  unmark?.();
  unmark = null;
  caseFile?.destroy();
  caseFile = null;
}

function showSearch() {
  closeReplay();
  document.body.dataset.view = "search";
  $("replay-view").hidden = true;
  $("search-view").hidden = false;
}

// The tabs beside the search; the exceptions follow the socket's pushes.
function setupTabs() {
  const defs = ["search", "stats", "exceptions", "live"].map((id) => ({ id, key: `sup.tab_${id}` }));
  const loaded = new Set();
  let live = null;
  let exceptions = null;
  let stats = null;
  const tabs = makeTabs($("sup-tabs"), $("sup-panels"), defs, {
    onSelect: (id) => {
      if (!live) return; // makeTabs' own first selection, before the tabs exist
      live.show(id === "live");
      const url = new URL(location.href);
      if (!url.searchParams.has("session") && (url.searchParams.get("tab") || "search") !== id) {
        if (id === "search") url.searchParams.delete("tab");
        else url.searchParams.set("tab", id);
        history.replaceState(history.state, "", url.pathname + url.search);
      }
      if (loaded.has(id)) return;
      loaded.add(id);
      if (id === "stats") stats.load();
      if (id === "exceptions") exceptions.load();
    },
  });
  tabs.panel("search").append($("search-cards"));
  stats = new StatsTab(tabs.panel("stats"));
  exceptions = new ExceptionsTab(tabs.panel("exceptions"), { openReplay: (sid, at) => openReplay(sid, true, 0, at), notify: () => tabs.notify("exceptions") });
  live = new LiveTab(tabs.panel("live"));
  const signal = new Signal({ pingMs: 10000, deadAfterMs: 25000 });
  exceptions.follow(signal);
  signal.connect().catch((err) => console.warn("supervise: socket", err.code || err.message));
  // Texts built from several keys (summaries, charts) are drawn again in the new language.
  onLangChange(() => {
    stats.render();
    if (exceptions.filters) exceptions.render();
    if (live.data) live.render();
  });
  window.jr = { ...window.jr, stats, exceptions, live, signal };
  const wanted = new URL(location.href).searchParams.get("tab");
  tabs.select(defs.some((d) => d.id === wanted) ? wanted : "search");
}

async function main() {
  const claims = await bootPage($("app"), { roles: ["supervisor", "admin"] });
  if (!claims) return;
  await loadNames();
  setupTabs();
  const select = $("search-dept");
  for (const d of departmentList()) select.append(el("option", { value: d.id, dept: d.id }));
  $("search-form").addEventListener("submit", (ev) => {
    ev.preventDefault();
    search();
  });
  $("replay-back").addEventListener("click", () => {
    if (history.state?.session) history.back();
    else {
      history.replaceState(null, "", "/supervise");
      showSearch();
    }
  });
  window.addEventListener("popstate", () => {
    const url = new URL(location.href);
    const sid = url.searchParams.get("session");
    if (sid) openReplay(sid, false, 0, momentOf(url));
    else showSearch();
  });
  onLangChange(() => player?.relabel());
  const url = new URL(location.href);
  const sid = url.searchParams.get("session");
  if (sid) await openReplay(sid, false, 0, momentOf(url));
  await search();
}

main().catch((err) => {
  console.warn("supervise:", err);
  fatal($("app"), "error.generic", { args: { message: err.message || String(err) } });
});
