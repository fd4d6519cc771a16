// Chat in the session: `chat` messages in (everyone, the sender included) and out, and
// the history that `joined` carries (what was missed while disconnected), merged by seq.
import { actorLine, clear, el, errorI18n } from "/static/ui.js";

export class ChatPanel {
  constructor(container, signal, { onUnread } = {}) {
    this.signal = signal;
    this.onUnread = onUnread;
    this.seen = new Set();
    this.log = el("ol", { class: "chat-log", testid: "chat-log", attrs: { "aria-live": "polite" } });
    this.input = el("input", { id: "chat-input", testid: "chat-input", maxLength: 4000, autocomplete: "off", placeholder: "chat.placeholder" });
    this.send = el("button", { type: "submit", class: "primary", testid: "chat-send", i18n: "chat.send" });
    this.error = el("p", { class: "form-error", attrs: { role: "alert" } });
    this.empty = el("li", { class: "chat-empty muted", i18n: "chat.empty" });
    this.log.append(this.empty);
    const form = el(
      "form",
      { class: "chat-form" },
      el("label", { class: "sr-only", htmlFor: "chat-input", i18n: "chat.label" }),
      this.input,
      this.send,
    );
    form.addEventListener("submit", (ev) => {
      ev.preventDefault();
      this.submit();
    });
    container.append(this.log, form, this.error);
  }

  async submit() {
    const text = this.input.value.trim();
    if (!text) return;
    clear(this.error);
    this.send.disabled = true;
    try {
      await this.signal.request({ type: "chat", text });
      this.input.value = "";
    } catch (err) {
      this.error.append(el("span", errorI18n(err)));
    } finally {
      this.send.disabled = false;
      this.input.focus();
    }
  }

  // One message, once (keyed by seq), in seq order: a message the page missed while it
  // was disconnected goes before the ones that came after it. True if it was new.
  add(msg, mine, { quiet = false } = {}) {
    const key = msg.seq ?? `${msg.ts}-${msg.participant_id}`;
    if (this.seen.has(key)) return false;
    this.seen.add(key);
    this.empty.remove();
    const item = el(
      "li",
      { class: `chat-msg${mine ? " mine" : ""}`, testid: "chat-message", data: { seq: String(msg.seq ?? "") } },
      el("div", { class: "chat-head" }, actorLine(msg.sender), el("time", { class: "muted", ts: msg.ts })),
      el("div", { class: "chat-text", text: msg.text }),
    );
    let next = null;
    if (msg.seq != null) {
      for (let node = this.log.lastElementChild; node && node.dataset.seq && Number(node.dataset.seq) > msg.seq; node = node.previousElementSibling) {
        next = node;
      }
    }
    this.log.insertBefore(item, next);
    this.log.scrollTop = this.log.scrollHeight;
    if (!mine && !quiet) this.onUnread?.();
    return true;
  }

  // The session's chat as `joined` lists it (on every join and resume): whatever is not
  // shown yet is merged in by seq, so nothing sent while the page was away is lost.
  merge(list, isMine) {
    let unread = false;
    for (const msg of list || []) {
      const mine = isMine(msg);
      if (this.add(msg, mine, { quiet: true }) && !mine) unread = true;
    }
    if (unread) this.onUnread?.();
  }
}
