// Tabs for the session's side panel (keyboard: arrows, Home, End), or stacked sections
// with headings for the applicant's simple screen.
import { el } from "/static/ui.js";

export function makeTabs(tablist, panelsBox, defs, { stacked = false, onSelect } = {}) {
  const tabs = new Map();
  const panels = new Map();
  let current = null;
  for (const def of defs) {
    const panel = el("section", { class: "panel", id: `panel-${def.id}`, testid: `panel-${def.id}` });
    panels.set(def.id, panel);
    if (stacked) {
      panel.append(el("h2", { class: "panel-title", i18n: def.key }));
      panelsBox.append(panel);
      continue;
    }
    // Named by its tab for the eye; a heading for those who move by headings (h1, h2, h3).
    panel.append(el("h2", { class: "panel-title sr-only", i18n: def.key }));
    panel.setAttribute("role", "tabpanel");
    panel.setAttribute("aria-labelledby", `tab-${def.id}`);
    panel.hidden = true;
    const badge = el("span", { class: "tab-badge", hidden: true, aria: "tabs.new_items" });
    const tab = el(
      "button",
      { type: "button", id: `tab-${def.id}`, testid: `tab-${def.id}`, attrs: { role: "tab", "aria-controls": `panel-${def.id}`, "aria-selected": "false", tabindex: "-1" } },
      el("span", { i18n: def.key }),
      badge,
    );
    tab.badge = badge;
    tab.addEventListener("click", () => select(def.id));
    tabs.set(def.id, tab);
    tablist.append(tab);
    panelsBox.append(panel);
  }
  if (stacked) tablist.hidden = true;
  tablist.addEventListener("keydown", (ev) => {
    const ids = [...tabs.keys()];
    const i = ids.indexOf(current);
    const next = { ArrowRight: i + 1, ArrowLeft: i - 1, Home: 0, End: ids.length - 1 }[ev.key];
    if (next === undefined) return;
    ev.preventDefault();
    const id = ids[(next + ids.length) % ids.length];
    select(id);
    tabs.get(id).focus();
  });
  function select(id) {
    if (stacked) return;
    current = id;
    for (const [key, tab] of tabs) {
      const on = key === id;
      tab.setAttribute("aria-selected", String(on));
      tab.tabIndex = on ? 0 : -1;
      panels.get(key).hidden = !on;
      if (on) tab.badge.hidden = true;
    }
    onSelect?.(id);
  }
  if (defs.length) select(defs[0].id);
  return {
    panel: (id) => panels.get(id),
    select,
    // A quiet marker that something new arrived in a tab that is not shown.
    notify(id) {
      const tab = tabs.get(id);
      if (tab && current !== id) tab.badge.hidden = false;
    },
  };
}
