// The reviewer's inbox: invitations arrive over the socket (and are re-sent on connect),
// shown at once and silently (an optional soft chime); accept joins in one click, decline
// asks for a reason.
import { api } from "/static/auth.js";
import { DeviceCheck } from "/static/devcheck.js";
import { onLangChange, t } from "/static/i18n.js";
import { Signal } from "/static/socket.js";
import { chime, setSound, soundOn } from "/static/sound.js";
import { bootPage, chip, clear, el, errorI18n, fatal, loginLink } from "/static/ui.js";

const OPEN = ["pending", "ringing", "unanswered"];
const app = document.getElementById("app");
const cards = new Map(); // invitation_id -> {inv, session, node}
let me = null;
let check = null;

function fact(labelKey, value) {
  if (!value) return [];
  return [el("dt", { i18n: labelKey }), el("dd", {}, value)];
}

function target(inv) {
  if (inv.reviewer) return el("span", { i18n: "inbox.for_you" });
  return el("span", {}, el("span", { dept: inv.dept }), inv.level ? el("span", { class: "muted", i18n: `level.${inv.level}_suffix` }) : null);
}

function renderCard(entry, isNew) {
  const { inv, session } = entry;
  const open = OPEN.includes(inv.status);
  const error = el("p", { class: "form-error", attrs: { role: "alert" } });
  const node = el(
    "article",
    {
      class: `invite-card${isNew && open ? " is-new" : ""}${open ? "" : " is-closed"}`,
      testid: open ? "invitation" : "invitation-done",
      data: { invitationId: inv.invitation_id, status: inv.status, sessionId: inv.session_id },
      attrs: { "aria-labelledby": `case-${inv.invitation_id}` },
    },
    el(
      "div",
      { class: "invite-top" },
      open ? el("span", { class: "chip chip-wait", i18n: isNew ? "inbox.new" : "inbox.waiting" }) : chip(inv.status),
      open && inv.status === "unanswered" ? el("span", { class: "chip chip-warn", i18n: "inbox.overdue" }) : null,
      el("span", { class: "grow" }),
      el("span", { class: "muted" }, el("span", { i18n: "inbox.invited_at" }), " ", el("time", { ts: inv.created_at })),
    ),
    el("h3", { class: "invite-case case-no", id: `case-${inv.invitation_id}`, text: inv.case_id }),
    el(
      "dl",
      { class: "invite-facts" },
      fact("inbox.matter", session?.matter),
      fact("inbox.applicant", session?.applicant_name),
      fact("inbox.window", session?.window),
      fact("inbox.invited_by", inv.created_by?.name),
      fact("inbox.target", target(inv)),
      fact("inbox.note", inv.note),
      open ? [] : closedFacts(inv),
    ),
  );
  if (open) node.append(actions(entry, error));
  node.append(error);
  return node;
}

function closedFacts(inv) {
  const mine = inv.responded_by?.sub === me.sub;
  if (inv.status === "accepted" && !mine) return fact("inbox.taken_by", inv.responded_by?.name);
  if (inv.status === "declined") return fact("inbox.reason", inv.reason);
  return [];
}

function actions(entry, error) {
  const { inv } = entry;
  const accept = el("button", { type: "button", class: "primary big", testid: "accept-invitation", i18n: "inbox.accept" });
  const decline = el("button", { type: "button", class: "big quiet", testid: "decline-invitation", i18n: "inbox.decline" });
  const reason = el("textarea", {
    id: `reason-${inv.invitation_id}`,
    testid: "decline-reason",
    maxLength: 500,
    required: true,
    placeholder: "inbox.reason_placeholder",
  });
  const quick = el(
    "div",
    { class: "reasons" },
    ["inbox.reason_not_ours", "inbox.reason_busy", "inbox.reason_other_level"].map((key) =>
      el("button", {
        type: "button",
        i18n: key,
        on: {
          click: () => {
            reason.value = t(key);
            reason.focus();
          },
        },
      }),
    ),
  );
  const confirm = el("button", { type: "button", class: "danger", testid: "decline-confirm", i18n: "inbox.decline_confirm" });
  const cancel = el("button", { type: "button", class: "quiet", i18n: "inbox.cancel" });
  const form = el(
    "div",
    { class: "decline-form", hidden: true },
    el("label", { htmlFor: reason.id, i18n: "inbox.reason_label" }),
    quick,
    reason,
    el("div", { class: "invite-actions", style: "margin-top:10px" }, confirm, cancel),
  );
  const busy = (on) => {
    for (const b of [accept, decline, confirm]) b.disabled = on;
  };
  accept.addEventListener("click", async () => {
    busy(true);
    clear(error);
    try {
      await signal.request({ type: "invitation.accept", invitation_id: inv.invitation_id });
      check?.stop();
      location.href = `/session/${inv.session_id}`;
    } catch (err) {
      error.append(el("span", errorI18n(err)));
      busy(false);
    }
  });
  decline.addEventListener("click", () => {
    form.hidden = false;
    decline.disabled = true;
    reason.focus();
  });
  cancel.addEventListener("click", () => {
    form.hidden = true;
    decline.disabled = false;
    clear(error);
  });
  confirm.addEventListener("click", async () => {
    const text = reason.value.trim();
    reason.setAttribute("aria-invalid", String(!text));
    clear(error);
    if (!text) {
      error.append(el("span", { i18n: "inbox.reason_required" }));
      reason.focus();
      return;
    }
    busy(true);
    try {
      const ack = await signal.request({ type: "invitation.decline", invitation_id: inv.invitation_id, reason: text });
      update(ack.invitation);
    } catch (err) {
      error.append(el("span", errorI18n(err)));
      busy(false);
    }
  });
  return el("div", {}, el("div", { class: "invite-actions" }, accept, decline), form);
}

function refresh() {
  const openBox = document.getElementById("open");
  const doneBox = document.getElementById("done");
  const entries = [...cards.values()];
  const open = entries.filter((e) => OPEN.includes(e.inv.status)).sort((a, b) => b.inv.created_at - a.inv.created_at);
  const done = entries.filter((e) => !OPEN.includes(e.inv.status));
  for (const e of open) if (e.node.parentElement !== openBox) openBox.append(e.node);
  for (const e of done) if (e.node.parentElement !== doneBox) doneBox.prepend(e.node);
  const empty = openBox.querySelector(".empty");
  if (!open.length && !empty) openBox.append(el("div", { class: "empty", i18n: "inbox.empty", testid: "inbox-empty" }));
  if (open.length && empty) empty.remove();
  document.getElementById("done-card").hidden = !done.length;
  const banner = document.getElementById("banner");
  banner.hidden = !open.length;
  if (open.length) clear(banner).append(el("span", { i18n: "inbox.banner", args: { n: open.length } }));
  document.title = open.length ? t("inbox.doc_title_count", { n: open.length }) : t("inbox.doc_title");
  // An invitation waits: show the camera preview and microphone level (once; the
  // reviewer may stop it). Nothing waits any more: the camera goes off again.
  if (!check) return;
  if (!open.length) {
    if (check.running && check.autoStarted) check.stop();
    check.autoStarted = false;
  } else if (!check.running && !check.autoStarted) {
    check.autoStarted = true;
    check.start();
  }
}

function upsert(inv, session, fresh) {
  const old = cards.get(inv.invitation_id);
  const entry = { inv, session: session || old?.session };
  const isNew = fresh && !old;
  entry.node = renderCard(entry, isNew || old?.node.classList.contains("is-new"));
  if (old) old.node.replaceWith(entry.node);
  cards.set(inv.invitation_id, entry);
  if (isNew && OPEN.includes(inv.status)) chime();
  refresh();
}

function update(inv) {
  const old = cards.get(inv.invitation_id);
  if (!old && !OPEN.includes(inv.status)) return;
  if (old && old.inv.status === inv.status && old.inv.responded_at === inv.responded_at) return;
  upsert(inv, old?.session, false);
}

// After a reconnect the server re-sends what is still open; what was answered or
// cancelled meanwhile is dropped from the open list.
async function reconcile() {
  let open;
  try {
    ({ invitations: open } = await api("/api/invitations"));
  } catch {
    return;
  }
  const ids = new Set(open.map((i) => i.invitation_id));
  for (const [id, entry] of cards) {
    if (OPEN.includes(entry.inv.status) && !ids.has(id)) {
      entry.node.remove();
      cards.delete(id);
    }
  }
  refresh();
}

function connState(state) {
  const chipNode = document.getElementById("conn");
  const tone = { open: "chip-ok", reconnecting: "chip-warn", closed: "chip-bad" }[state] || "chip-muted";
  chipNode.className = `chip ${tone}`;
  chipNode.dataset.state = state;
  chipNode.dataset.i18n = `conn.${state}`;
  chipNode.textContent = t(`conn.${state}`);
}

// Waiting for invitations, not in a call: a slower heartbeat (the server's own still
// notices a dead socket within seconds).
const signal = new Signal({ pingMs: 10000, deadAfterMs: 25000 });

async function main() {
  me = await bootPage(app, { roles: ["reviewer"] });
  if (!me) return;
  check = new DeviceCheck(document.getElementById("check"));
  const sound = document.getElementById("sound");
  sound.checked = soundOn();
  sound.addEventListener("change", () => setSound(sound.checked));
  signal.on("state", ({ state }) => connState(state));
  signal.on("invitation", (msg) => upsert(msg.invitation, msg.session, true));
  signal.on("invitation.updated", (msg) => update(msg.invitation));
  signal.on("reconnected", () => reconcile());
  signal.on("closed", ({ code }) => {
    check.stop();
    fatal(app, `error.${code}`, { link: loginLink() }).dataset.code = code;
  });
  onLangChange(() => refresh());
  refresh();
  connState("connecting");
  signal.connect().catch(() => {});
  window.jr = { signal };
}
main();
