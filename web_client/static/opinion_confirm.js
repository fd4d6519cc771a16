// Before an opinion is filed (issue #16 item 6): a confirmation that shows exactly what
// goes into the case file — the decision, the missing materials, the department referred
// to, the note, and who files it — built from the very body that will be sent.
import { el } from "/static/ui.js";

function row(labelKey, ...value) {
  return el("div", { class: "confirm-row" }, el("dt", { i18n: labelKey }), el("dd", {}, ...value));
}

// Resolves true when the reviewer chooses to file, false when they go back to edit.
export function confirmOpinion(body, me) {
  const dialog = el(
    "dialog",
    { class: "confirm opinion-confirm", testid: "opinion-confirm", attrs: { "aria-labelledby": "opinion-confirm-title" } },
    el(
      "form",
      { method: "dialog" },
      el("h2", { id: "opinion-confirm-title", i18n: "opinion.confirm_title" }),
      el(
        "dl",
        { class: "confirm-list", testid: "opinion-confirm-content", data: { decision: body.decision } },
        row("opinion.decision", el("strong", { i18n: `opinion.decision_${body.decision}` })),
        body.missing?.length ? row("opinion.confirm_missing", el("ul", { class: "missing" }, body.missing.map((m) => el("li", { text: m })))) : null,
        body.refer_to ? row("opinion.refer", el("span", { dept: body.refer_to })) : null,
        body.note ? row("opinion.note", el("span", { class: "opinion-note", text: body.note })) : null,
        row("opinion.confirm_by", el("span", { text: me.name || me.sub }), me.dept ? " · " : null, me.dept ? el("span", { dept: me.dept }) : null),
      ),
      el("p", { class: "muted", i18n: "opinion.confirm_text" }),
      el(
        "div",
        { class: "confirm-actions" },
        el("button", { value: "back", class: "quiet", testid: "opinion-confirm-back", i18n: "opinion.confirm_back", autofocus: true }),
        el("button", { value: "file", class: "primary", testid: "opinion-confirm-file", i18n: "opinion.confirm_file" }),
      ),
    ),
  );
  document.body.append(dialog);
  return new Promise((resolve) => {
    dialog.addEventListener("close", () => {
      resolve(dialog.returnValue === "file");
      dialog.remove();
    });
    dialog.showModal();
  });
}
