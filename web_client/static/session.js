// The live session (/session/{sid}), for every role: join (or resume) over the socket,
// publish camera and microphone, receive everyone else, and the side panels (invitations,
// chat, opinions, document stills). Reconnects with backoff and resumes its slot.
import { AnswerWatch } from "/static/answers.js";
import { api, tokenClaims } from "/static/auth.js";
import { ChatPanel } from "/static/chat.js";
import { LocalMedia } from "/static/controls.js";
import { DocumentSource, SnapshotGallery } from "/static/documents.js";
import { untilSealed } from "/static/expected.js";
import { onLangChange, t } from "/static/i18n.js";
import { InvitesPanel } from "/static/invites.js";
import { MediaLink } from "/static/media.js";
import { ObserverBanner, observes } from "/static/observers.js";
import { OpinionsPanel } from "/static/opinions.js";
import { installPhone } from "/static/phone.js";
import { earlierAnswer, prejoin } from "/static/prejoin.js";
import { printButton, printSheet } from "/static/sheet.js";
import { QualityMeter } from "/static/quality.js";
import { SendScale } from "/static/sendscale.js";
import { Signal } from "/static/socket.js";
import { showSummary } from "/static/summary.js";
import { makeTabs } from "/static/tabs.js";
import { VideoGrid } from "/static/tiles.js";
import { bootPage, el, errorI18n, fatal, fill, homeOf, loginLink, toast } from "/static/ui.js";

const STAFF = ["clerk", "admin"];
const sid = decodeURIComponent(location.pathname.split("/")[2] || "");
const resumeKey = `jr.resume.${sid}`;
const app = document.getElementById("app");
const $ = (id) => document.getElementById(id);

const ctx = { sid, me: null, session: null, participantId: null, started: false, over: false, recording: false };
const signal = new Signal();
let grid, media, local, quality, scale, panels, chat, opinions, invites, gallery, docs, watchers, answers;

// -- the screen ------------------------------------------------------------------------
function tabsFor(role) {
  if (STAFF.includes(role)) return [["invites", "tabs.invites"], ["chat", "tabs.chat"], ["opinions", "tabs.opinions"], ["docs", "tabs.docs"]];
  if (role === "reviewer") return [["opinions", "tabs.opinion_form"], ["chat", "tabs.chat"], ["docs", "tabs.docs"], ["invites", "tabs.people"]];
  return [["opinions", "tabs.opinions_applicant"], ["chat", "tabs.chat"], ["docs", "tabs.docs"]];
}

function build() {
  const role = ctx.me.role;
  const staff = STAFF.includes(role);
  document.body.classList.add(`role-${role}`);
  for (const node of document.querySelectorAll(".staff-only")) node.hidden = !staff;
  // The opinion sheet (a draft until the case file is sealed): not for an applicant's link.
  $("print-sheet").hidden = role === "applicant";
  grid = new VideoGrid($("tiles"), $("doc-stage"), { onAudioBlocked: () => ($("enable-audio").hidden = false) });
  media = new MediaLink(signal, {
    onRemotes: (list) => grid.setRemote(list),
    onState: (state) => (document.body.dataset.media = state),
    onError: (err) => {
      console.warn("media negotiation failed:", err.code || err.name, err.message);
      if (!ctx.over && signal.state === "open") toast("session.media_retrying", null, "warn");
    },
  });
  local = new LocalMedia({ media, grid, notice: $("stage-notice") });
  watchers = new ObserverBanner($("observers"), signal);
  quality = new QualityMeter($("quality"), () => media.pc, () => liveVideoMids(), () => pausedVideos().length);
  scale = new SendScale(() => media.sender("camera"));
  const defs = tabsFor(role).map(([id, key]) => ({ id, key }));
  panels = makeTabs($("tabs"), $("panels"), defs, { stacked: role === "applicant" });
  chat = new ChatPanel(panels.panel("chat"), signal, { onUnread: () => panels.notify("chat") });
  if (staff) answers = new AnswerWatch(sid, panels);
  gallery = new SnapshotGallery(panels.panel("docs"), $("viewer"), {
    sessionId: sid,
    onNew: (snap) => {
      panels.notify("docs");
      if (snap.taken_by?.sub !== ctx.me.sub) toast("doc.still_received", { name: snap.taken_by?.name || "" });
    },
  });
  if (staff) {
    docs = new DocumentSource({ select: $("document-source"), button: $("snapshot"), media, grid, sessionId: sid, cameraId: () => local.cameraId() });
    local.onDevices = () => docs.fill();
    $("end").addEventListener("click", () => $("confirm-end").showModal());
    $("confirm-end").addEventListener("close", () => $("confirm-end").returnValue === "end" && endSession());
  }
  $("record").addEventListener("click", () => toggleRecording());
  $("leave").addEventListener("click", () => leave());
  $("print-sheet").addEventListener("click", () => printSheet($("print-sheet"), sid, ctx.session?.case_id));
  $("enable-audio").addEventListener("click", () => {
    grid.resumeAudio();
    $("enable-audio").hidden = true;
  });
  window.jr = { signal, media, grid, ctx };
}

function buildPanels(joined) {
  const role = ctx.me.role;
  if (!opinions) {
    opinions = new OpinionsPanel(panels.panel("opinions"), { sessionId: sid, canFile: role === "reviewer", me: ctx.me });
  }
  if (!invites && panels.panel("invites")) {
    invites = new InvitesPanel(panels.panel("invites"), { sessionId: sid, manage: STAFF.includes(role), session: joined.session });
  }
}

function renderFacts(session) {
  const fact = (key, value, testid) =>
    value ? el("span", { class: "fact" }, el("span", { class: "fact-label", i18n: key }), el("span", { class: "fact-value", text: value, testid })) : null;
  fill($("facts"),
    el("span", { class: "case-no fact-case", text: session.case_id, testid: "session-case" }),
    fact("session.matter", session.matter, "session-matter"),
    fact("session.applicant", session.applicant_name),
    fact("session.window", session.window),
    el("span", { class: "fact" }, el("span", { class: "fact-label", i18n: "session.started" }), el("time", { ts: session.created_at })),
  );
  document.title = `${session.case_id} · ${t("session.doc_title")}`;
}

// The indicator everyone sees, and the staff's start/stop button (policy "clerk").
function setRecording(active) {
  ctx.recording = active;
  $("recording").hidden = !active;
  document.body.dataset.recording = active ? "1" : "0";
  const button = $("record");
  Object.assign(button.dataset, { recording: active ? "1" : "0", i18n: active ? "controls.record_stop" : "controls.record_start" });
  button.textContent = t(button.dataset.i18n);
}

// Only staff, and only where recording is theirs to decide (`recording_policy` "clerk").
function showRecordingControl(policy) {
  $("record").hidden = !(STAFF.includes(ctx.me.role) && policy === "clerk");
}

async function toggleRecording() {
  const button = $("record");
  if (button.disabled) return;
  button.disabled = true;
  button.setAttribute("aria-busy", "true");
  try {
    const ack = await signal.request({ type: ctx.recording ? "recording.stop" : "recording.start" });
    setRecording(Boolean(ack.recording));
  } catch (err) {
    const { i18n, args } = errorI18n(err);
    toast(i18n, args, "bad");
  } finally {
    button.disabled = false;
    button.removeAttribute("aria-busy");
  }
}

function isMine(msg) {
  return msg.participant_id === ctx.participantId || (msg.sender?.sub != null && msg.sender.sub === ctx.me.sub);
}

// The remote cameras the server says are published, by mid (the quality chip's
// "stalled"; a shared screen may legitimately send no frame for seconds). A camera the
// server paused for us (our link is too thin) is expected to send nothing.
function liveVideoMids() {
  const paused = new Set(pausedVideos());
  const cams = [...media.remotes.values()].filter(
    (r) => r.info.kind === "video" && r.info.source === "camera" && r.track && !paused.has(r.info.track_id));
  const mids = cams.map((r) => r.transceiver.mid);
  return new Set(mids.filter(Boolean));
}

// Videos the SFU paused for this page (video_paused): track id -> {pid, source, pc}.
// A new media connection starts with nothing paused; so does a track that went away.
const PAUSED = new Map();

function pausedVideos() {
  const live = new Set([...media.remotes.values()].map((r) => r.info.track_id));
  for (const [id, p] of PAUSED) if (p.pc !== media.pc || !live.has(id)) PAUSED.delete(id);
  grid.videoPaused([...PAUSED.values()]);
  return [...PAUSED.keys()];
}

function onVideoPaused(msg) {
  if (msg.paused) PAUSED.set(msg.track_id, { pid: msg.participant_id, source: msg.source, pc: media.pc });
  else PAUSED.delete(msg.track_id);
  pausedVideos();
}

function connState(state) {
  const node = $("conn");
  const tone = { open: "chip-ok", reconnecting: "chip-warn", closed: "chip-muted" }[state] || "chip-muted";
  node.className = `chip ${tone}`;
  node.dataset.state = state;
  node.dataset.i18n = `conn.${state}`;
  node.textContent = t(`conn.${state}`);
  $("reconnecting").hidden = state !== "reconnecting" || ctx.over;
}

// -- joining and resuming --------------------------------------------------------------
async function enter() {
  let joined = null;
  try {
    const stored = sessionStorage.getItem(resumeKey);
    if (stored) {
      try {
        joined = await signal.request({ type: "resume", resume_token: stored });
      } catch (err) {
        if (err.code === "disconnected" || err.code === "timeout") throw err;
        sessionStorage.removeItem(resumeKey); // expired or unknown: take a (new) slot
      }
    }
    if (observes(ctx.me)) return await applyObserving(await signal.request({ type: "observe", session_id: sid }));
    joined = joined || (await signal.request({ type: "join", session_id: sid }));
  } catch (err) {
    if (err.code === "disconnected" || err.code === "timeout") return; // the next reconnect tries again
    if (err.code === "session_ended") ended(null);
    else refuse(err);
    return;
  }
  await applyJoined(joined);
}

// A supervisor watches: no slot, no local media, receive everyone (observers.js).
async function applyObserving(obs) {
  const oid = obs.observation.observation_id;
  ctx.participantId = oid;
  ctx.session = obs.session;
  Object.assign(document.body.dataset, { observing: "1", participantId: oid });
  renderFacts(obs.session);
  buildPanels(obs);
  for (const id of [...grid.tiles.keys()]) onParticipant({ participant_id: id, state: "left" });
  for (const p of obs.participants) onParticipant(p);
  invites?.setInvitations(obs.invitations);
  setRecording(Boolean(obs.recording));
  watchers.reset(obs.observers);
  opinions.load().catch((err) => console.warn("opinions:", err.message));
  gallery.load().catch((err) => console.warn("stills:", err.message));
  const iceServers = signal.welcome?.ice_servers || [];
  if (!ctx.started) {
    ctx.started = true;
    document.body.dataset.joined = "1";
    media.start(oid, iceServers);
  } else {
    media.iceServers = iceServers;
    media.restart(oid);
  }
}

async function applyJoined(joined) {
  watchers.reset(); // those watching now follow `joined` as messages
  sessionStorage.setItem(resumeKey, joined.resume_token);
  const pid = joined.participant.participant_id;
  const newSlot = ctx.participantId !== null && ctx.participantId !== pid;
  ctx.participantId = pid;
  ctx.session = joined.session;
  document.body.dataset.participantId = pid;
  renderFacts(joined.session);
  buildPanels(joined);
  grid.setSelf(pid, joined.participant.identity);
  // Whoever left while we were away is not in the snapshot: drop them.
  const present = new Set(joined.participants.map((p) => p.participant_id));
  for (const id of [...grid.tiles.keys()]) {
    if (id !== pid && !present.has(id)) onParticipant({ participant_id: id, state: "left" });
  }
  for (const p of joined.participants) onParticipant(p);
  invites?.setInvitations(joined.invitations);
  for (const inv of joined.invitations) answers?.see(inv);
  setRecording(Boolean(joined.recording));
  showRecordingControl(joined.recording_policy);
  chat.merge(joined.chat, isMine); // what others said while we were away, in order, once
  // Opinions and stills filed while we were away (both lists are keyed by id).
  opinions.load().catch((err) => console.warn("opinions:", err.message));
  gallery.load().catch((err) => console.warn("stills:", err.message));
  const iceServers = signal.welcome?.ice_servers || [];
  if (!ctx.started) {
    ctx.started = true;
    document.body.dataset.joined = "1";
    docs?.fill();
    await local.start(ctx.prejoin);
    if (ctx.prejoin?.then === "audio_only") $("cam").hidden = true; // no video: as agreed
    if (!ctx.over) media.start(pid, iceServers);
  } else if (newSlot || !media.pc || ["failed", "closed"].includes(media.pc.connectionState)) {
    media.iceServers = iceServers;
    media.restart(pid);
  } else {
    media.healAfterReconnect().catch(() => {});
  }
}

function onParticipant(p) {
  if (!p || p.participant_id === ctx.participantId) return;
  grid.upsertParticipant(p);
  invites?.setParticipant(p);
}

// -- messages --------------------------------------------------------------------------
function onInvitation(inv) {
  invites?.update(inv);
  answers?.see(inv); // the staff hear of every answer (answers.js)
}

function listen() {
  signal.on("state", ({ state }) => connState(state));
  signal.on("reconnected", () => !ctx.over && enter());
  signal.on("presence", (msg) => msg.participant && onParticipant(msg.participant));
  signal.on("invitation.updated", (msg) => onInvitation(msg.invitation));
  signal.on("chat", (msg) => chat.add(msg, isMine(msg)));
  signal.on("media.tracks", (msg) => media.setTracks(msg.tracks));
  signal.on("speaking", (msg) => grid.speaking(msg.participant_id));
  signal.on("video_paused", (msg) => !ctx.over && onVideoPaused(msg));
  signal.on("media.state", (msg) => !ctx.over && media.serverState(msg.state, msg.reason));
  signal.on("snapshot", (msg) => gallery.add(msg.snapshot));
  signal.on("opinion.filed", (msg) => opinions?.add(msg.opinion));
  signal.on("recording", (msg) => setRecording(Boolean(msg.active)));
  signal.on("session.ended", (msg) => ended(msg.session));
  signal.on("closed", ({ code }) => stopped(code));
}

// -- the end of it -----------------------------------------------------------------------
function cleanup() {
  ctx.over = true;
  sessionStorage.removeItem(resumeKey);
  quality?.stop();
  scale?.stop();
  media?.close();
  local?.stop();
  docs?.stop();
  $("reconnecting").hidden = true;
}

function homeLink() {
  const home = homeOf(ctx.me);
  if (!home || ctx.me.role === "applicant") return undefined;
  return { href: home, key: STAFF.includes(ctx.me.role) ? "session.back_counter" : "session.back_inbox", testid: "go-home" };
}

function ended(session) {
  if (ctx.over && document.querySelector("[data-testid=session-ended]")) return;
  cleanup();
  signal.close();
  const by = session?.ended_by?.name;
  const box = fatal(app, by ? "session.ended_by" : "session.ended", {
    testid: "session-ended",
    tone: "info",
    args: { name: by || "", case: session?.case_id || "" },
    link: homeLink(),
  });
  // Above the way back: when it ended, then (for staff) where it was filed.
  const back = box.querySelector("a.button");
  if (session?.ended_at) box.insertBefore(el("p", { class: "muted" }, el("time", { ts: session.ended_at, tsStyle: "datetime" })), back);
  if (ctx.me.role === "applicant") {
    box.append(el("p", { class: "muted", i18n: "session.applicant_bye" }));
    showSummary(box, sid, { case_id: ctx.me.case, ...ctx.session, ...(session || {}) });
  }
  if (STAFF.includes(ctx.me.role)) showFiled(box, back, session?.case_id || "");
}

// The clerk sees the session filed: the case file's index once it is sealed (moments
// after the end: the media node closes the recording first; expected.js asks the case's
// track meanwhile, since the index answers 409 until then), counted.
const FILED_TRIES = 20;
const FILED_RETRY_MS = 750;

async function showFiled(box, back, caseId) {
  const line = el("p", { class: "muted filed", testid: "session-filing", i18n: "session.filing" });
  box.insertBefore(line, back);
  let ix = null;
  try {
    if (caseId && (await untilSealed(caseId, sid, { tries: FILED_TRIES, everyMs: FILED_RETRY_MS }))) {
      ix = await api(`/api/sessions/${encodeURIComponent(sid)}/casefile`);
    }
  } catch (err) {
    console.warn("filed: not read", err?.code || err);
  }
  if (!ix) {
    line.replaceWith(el("p", { class: "muted filed", testid: "session-filed-unknown", i18n: "session.filed_unknown" }));
    return;
  }
  const n = ix.summary;
  line.replaceWith(
    el(
      "div",
      { class: "filed", testid: "session-filed", data: { tracks: String(n.tracks), stills: String(n.stills), opinions: String(n.opinions), events: String(n.events) } },
      el("p", {}, el("strong", { i18n: "session.filed", args: { case: ix.case_id || caseId } })),
      el("p", { class: "muted", i18n: "session.filed_counts", args: n }),
      el("p", { class: "muted" }, el("span", { i18n: "session.filed_at" }), " ", el("time", { ts: ix.sealed_at, tsStyle: "datetime" })),
      el("p", { class: "filed-actions" }, printButton(sid, ix.case_id || caseId), " ", el("a", { class: "button quiet", href: `/case?${new URLSearchParams({ case: ix.case_id || caseId })}`, i18n: "track.open", testid: "open-track" })),
    ),
  );
}

async function leave() {
  try {
    await signal.request({ type: "leave" }, 5000);
  } catch {
    // leaving anyway: the slot ends with the grace period
  }
  cleanup();
  signal.close();
  const box = fatal(app, "session.left", { testid: "session-left", tone: "info", link: homeLink() });
  box.append(el("button", { type: "button", class: "primary", testid: "rejoin", i18n: "session.rejoin", on: { click: () => location.reload() } }));
}

async function endSession() {
  try {
    const session = await api(`/api/sessions/${sid}/end`, { method: "POST" });
    ended(session);
  } catch (err) {
    toast(errorI18n(err).i18n, errorI18n(err).args, "bad");
  }
}

function stopped(code) {
  if (ctx.over) return;
  cleanup();
  const key = code === "token_expired" ? "error.token_expired" : `error.${code}`;
  const link = code === "token_expired" ? loginLink() : homeLink();
  fatal(app, key, { testid: "page-error", link }).dataset.code = code;
}

function refuse(err) {
  cleanup();
  signal.close();
  // Another department's session answers as an unknown one (no oracle): say both.
  const reviewer = ctx.me.role === "reviewer" && ["forbidden", "session_not_found"].includes(err.code);
  const props = reviewer ? { i18n: "error.not_invited" } : errorI18n(err);
  const box = fatal(app, "error.generic", { testid: "join-error", link: homeLink() });
  box.dataset.code = err.code;
  box.querySelector(".notice-text").replaceWith(el("p", { class: "notice-text", ...props }));
}

async function main() {
  ctx.me = await bootPage(app);
  if (!ctx.me) return;
  ctx.me = { ...ctx.me, ...(tokenClaims() || {}) };
  build();
  listen();
  installPhone(panels, ctx.me.role);
  if (ctx.me.role === "applicant") {
    // The pre-join screen: devices, the recording notice answered, then join (#16).
    const earlier = earlierAnswer(sid);
    ctx.prejoin = earlier && earlier.then !== "leave" ? earlier : await prejoin(sid, ctx.me);
  }
  onLangChange(() => ctx.session && renderFacts(ctx.session));
  connState("connecting");
  try {
    await signal.connect();
  } catch {
    return; // reconnecting with backoff; "reconnected" enters
  }
  await enter();
}
main();
