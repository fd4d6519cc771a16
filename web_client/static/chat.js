// Chat in the session: `chat` messages in (everyone, the sender included) and out.
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

  add(msg, mine) {
    const key = msg.seq ?? `${msg.ts}-${msg.participant_id}`;
    if (this.seen.has(key)) return;
    this.seen.add(key);
    this.empty.remove();
    this.log.append(
      el(
        "li",
        { class: `chat-msg${mine ? " mine" : ""}`, testid: "chat-message", data: { seq: String(msg.seq ?? "") } },
        el("div", { class: "chat-head" }, actorLine(msg.sender), el("time", { class: "muted", ts: msg.ts })),
        el("div", { class: "chat-text", text: msg.text }),
      ),
    );
    this.log.scrollTop = this.log.scrollHeight;
    if (!mine) this.onUnread?.();
  }
}
