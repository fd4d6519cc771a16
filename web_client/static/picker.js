// Choosing whom to invite: departments by level (city / district) and named reviewers,
// from GET /api/directory. Used at the counter (invite at once) and in the session.
import { api } from "/static/auth.js";
import { onLangChange, t } from "/static/i18n.js";
import { deptLabel, el } from "/static/ui.js";

const LEVELS = ["city", "district"];

export class TargetPicker {
  constructor(container, { prefix = "invite", note = true } = {}) {
    this.container = container;
    this.prefix = prefix;
    this.withNote = note;
    this.directory = { departments: [], reviewers: [] };
    this.boxes = new Map();
  }

  async load() {
    this.directory = await api("/api/directory");
    this.render();
    onLangChange(() => this.labelReviewers());
  }

  render() {
    const { departments } = this.directory;
    const groups = LEVELS.map((level) => {
      const depts = departments.filter((d) => d.level === level);
      if (!depts.length) return null;
      return el(
        "fieldset",
        {},
        el("legend", { i18n: `picker.level_${level}` }),
        el(
          "div",
          { class: "checks" },
          depts.map((d) => {
            const box = el("input", { type: "checkbox", value: d.id, testid: `${this.prefix}-dept-${d.id}` });
            this.boxes.set(d.id, box);
            return el("label", { class: "check" }, box, el("span", { dept: d.id }));
          }),
        ),
      );
    });
    this.reviewer = el("select", { id: `${this.prefix}-reviewer`, testid: `${this.prefix}-reviewer` });
    this.labelReviewers();
    this.note = this.withNote
      ? el("input", { id: `${this.prefix}-note`, testid: `${this.prefix}-note`, maxLength: 500, placeholder: "picker.note_placeholder" })
      : null;
    this.container.append(
      el("div", { class: "picker-head", i18n: "picker.heading" }),
      ...groups.filter(Boolean),
      el(
        "div",
        { class: "row" },
        el("div", { class: "field" }, el("label", { htmlFor: this.reviewer.id, i18n: "picker.reviewer" }), this.reviewer),
        this.note ? el("div", { class: "field" }, el("label", { htmlFor: this.note.id, i18n: "picker.note" }), this.note) : null,
      ),
    );
  }

  labelReviewers() {
    const current = this.reviewer.value;
    this.reviewer.replaceChildren(el("option", { value: "", text: t("picker.reviewer_none") }));
    for (const level of LEVELS) {
      const people = this.directory.reviewers.filter((r) => r.level === level);
      if (!people.length) continue;
      const group = el("optgroup", { label: t(`picker.level_${level}`) });
      for (const r of people) group.append(el("option", { value: r.sub, text: t("picker.reviewer_option", { name: r.name, dept: deptLabel(r.dept) }) }));
      this.reviewer.append(group);
    }
    this.reviewer.value = current;
  }

  // [{dept} | {reviewer}], each with the note when there is one.
  selected() {
    const note = this.note?.value.trim() || undefined;
    const targets = [...this.boxes].filter(([, box]) => box.checked).map(([dept]) => ({ dept, note }));
    if (this.reviewer.value) targets.push({ reviewer: this.reviewer.value, note });
    return targets;
  }

  reset() {
    for (const box of this.boxes.values()) box.checked = false;
    this.reviewer.value = "";
    if (this.note) this.note.value = "";
  }
}

// Invite every target; returns the errors (an empty list when all went through).
export async function inviteAll(sessionId, targets) {
  const results = await Promise.allSettled(
    targets.map((body) => api(`/api/sessions/${sessionId}/invitations`, { method: "POST", body })),
  );
  return results.filter((r) => r.status === "rejected").map((r) => r.reason);
}
