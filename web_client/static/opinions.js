// Opinions (会办意见): reviewers file them (POST /api/sessions/{sid}/opinions, validated by
// the server), everyone sees them as they are filed (`opinion.filed`). Nothing is
// pre-selected, and a confirmation shows what goes into the case file before it is filed.
import { api } from "/static/auth.js";
import { confirmOpinion } from "/static/opinion_confirm.js";
import { actorLine, clear, departmentList, el, errorI18n, toast } from "/static/ui.js";

const DECISIONS = ["approve", "materials_missing", "refer", "note"];
const TONE = { approve: "ok", materials_missing: "warn", refer: "wait", note: "muted" };

export class OpinionsPanel {
  constructor(container, { sessionId, canFile, me }) {
    this.sessionId = sessionId;
    this.me = me;
    this.seen = new Set();
    this.list = el("div", { class: "opinions", testid: "opinion-list" });
    this.empty = el("p", { class: "muted", i18n: "opinion.empty" });
    this.list.append(this.empty);
    if (canFile) container.append(this.form());
    container.append(el("h3", { class: "panel-sub", i18n: "opinion.filed_heading" }), this.list);
  }

  form() {
    const radios = DECISIONS.map((d) =>
      el(
        "label",
        { class: "check" },
        el("input", { type: "radio", name: "decision", value: d, testid: `opinion-decision-${d}` }),
        el("span", { i18n: `opinion.decision_${d}` }),
      ),
    );
    this.missing = el("textarea", { id: "opinion-missing", testid: "opinion-missing", rows: 3, placeholder: "opinion.missing_placeholder" });
    this.refer = el(
      "select",
      { id: "opinion-refer", testid: "opinion-refer" },
      el("option", { value: "", i18n: "opinion.refer_choose" }),
      departmentList()
        .filter((d) => d.id !== this.me.dept)
        .map((d) => el("option", { value: d.id, dept: d.id })),
    );
    this.note = el("textarea", { id: "opinion-note", testid: "opinion-note", rows: 3, maxLength: 2000 });
    this.error = el("p", { class: "form-error", attrs: { role: "alert" } });
    this.missingField = el("div", { class: "field", hidden: true }, el("label", { htmlFor: "opinion-missing", i18n: "opinion.missing" }), this.missing);
    this.referField = el("div", { class: "field", hidden: true }, el("label", { htmlFor: "opinion-refer", i18n: "opinion.refer" }), this.refer);
    this.submitButton = el("button", { type: "submit", class: "primary", testid: "opinion-submit", i18n: "opinion.submit" });
    const form = el(
      "form",
      { class: "opinion-form", testid: "opinion-form", noValidate: true },
      (this.decisions = el("fieldset", { testid: "opinion-decisions" }, el("legend", { i18n: "opinion.decision" }), el("div", { class: "radios" }, radios))),
      this.missingField,
      this.referField,
      el("div", { class: "field" }, el("label", { htmlFor: "opinion-note", i18n: "opinion.note" }), this.note),
      el("p", { class: "muted", i18n: "opinion.signed", args: { name: this.me.name || this.me.sub } }),
      this.error,
      this.submitButton,
    );
    this.formEl = form;
    form.addEventListener("change", () => this.showFields());
    form.addEventListener("submit", (ev) => {
      ev.preventDefault();
      this.submit();
    });
    return form;
  }

  decision() {
    return this.formEl.querySelector("input[name=decision]:checked")?.value || null;
  }

  showFields() {
    const d = this.decision();
    this.missingField.hidden = d !== "materials_missing";
    this.referField.hidden = d !== "refer";
  }

  body() {
    const decision = this.decision();
    if (!decision) return [null, "opinion.decision_required", this.formEl.querySelector("input[name=decision]")];
    const body = { decision, note: this.note.value.trim() || undefined };
    if (decision === "materials_missing") {
      body.missing = this.missing.value.split("\n").map((s) => s.trim()).filter(Boolean);
      if (!body.missing.length) return [null, "opinion.missing_required", this.missing];
    }
    if (decision === "refer") {
      body.refer_to = this.refer.value || undefined;
      if (!body.refer_to) return [null, "opinion.refer_required", this.refer];
    }
    if (decision === "note" && !body.note) return [null, "opinion.note_required", this.note];
    return [body];
  }

  async submit() {
    clear(this.error);
    for (const f of [this.missing, this.refer, this.note, this.decisions]) f.removeAttribute("aria-invalid");
    const [body, problem, field] = this.body();
    if (!body) {
      this.error.append(el("span", { i18n: problem }));
      (field.type === "radio" ? this.decisions : field).setAttribute("aria-invalid", "true");
      field.focus();
      return;
    }
    this.submitButton.disabled = true;
    if (!(await confirmOpinion(body, this.me))) {
      this.submitButton.disabled = false;
      return;
    }
    try {
      const opinion = await api(`/api/sessions/${this.sessionId}/opinions`, { method: "POST", body });
      this.add(opinion);
      this.formEl.reset();
      this.showFields();
      toast("opinion.filed_toast", null, "ok");
    } catch (err) {
      this.error.append(el("span", errorI18n(err)));
    } finally {
      this.submitButton.disabled = false;
    }
  }

  async load() {
    const { opinions } = await api(`/api/sessions/${this.sessionId}/opinions`);
    for (const o of opinions) this.add(o);
  }

  add(o) {
    if (this.seen.has(o.opinion_id)) return;
    this.seen.add(o.opinion_id);
    this.empty.remove();
    const details = [];
    if (o.missing?.length) {
      details.push(el("div", { class: "muted", i18n: "opinion.missing_list" }), el("ul", { class: "missing" }, o.missing.map((m) => el("li", { text: m }))));
    }
    if (o.refer_to) details.push(el("p", {}, el("span", { i18n: "opinion.refer_to" }), " ", el("strong", { dept: o.refer_to })));
    if (o.note) details.push(el("p", { class: "opinion-note", text: o.note }));
    this.list.prepend(
      el(
        "article",
        { class: `opinion opinion-${TONE[o.decision]}`, testid: "opinion", data: { opinionId: o.opinion_id, decision: o.decision } },
        el(
          "div",
          { class: "opinion-head" },
          el("span", { class: `chip chip-${TONE[o.decision]}`, i18n: `opinion.decision_${o.decision}` }),
          el("time", { class: "muted", ts: o.created_at, tsStyle: "datetime" }),
        ),
        actorLine(o.author),
        details,
      ),
    );
  }
}
