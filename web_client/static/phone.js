// Phones and small screens (issue #16; the layout itself is phone.css): one main video
// large (whoever speaks, else the first other participant), the self-view small, and
// the side panel's sections as bottom sheets opened from the control bar.
import { el } from "/static/ui.js";

const SMALL = "(max-width: 600px), (max-height: 500px) and (max-width: 950px)";

// The sheets each role gets: [panel id, label key] (the panels of session.js's tabs).
function sheetsFor(role) {
  if (role === "applicant") return [["opinions", "phone.sheet_opinions"], ["chat", "phone.sheet_chat"]];
  if (role === "reviewer") return [["opinions", "phone.sheet_opinions"], ["chat", "phone.sheet_chat"], ["docs", "phone.sheet_more"]];
  return [["invites", "tabs.invites"], ["chat", "phone.sheet_chat"], ["opinions", "phone.sheet_opinions"]];
}

// The main tile: the one pinned by a tap, else the speaker if it is someone else, else
// the one shown before if still here, else the first other participant's tile.
function pickMain(tiles) {
  const others = [...tiles.querySelectorAll(".tile:not(.tile-self)")];
  const current = others.find((t) => t.classList.contains("tile-main"));
  const pinned = others.find((t) => t.dataset.pinned === "1");
  const main = pinned || others.find((t) => t.classList.contains("speaking")) || current || others[0] || null;
  for (const t of others) t.classList.toggle("tile-main", t === main);
  tiles.dataset.others = String(others.length);
}

export function installPhone(panels, role) {
  const media = window.matchMedia(SMALL);
  const tiles = document.getElementById("tiles");
  const side = document.getElementById("side");
  const controls = document.getElementById("controls");
  const observer = new MutationObserver(() => pickMain(tiles));
  // A tap on someone's video keeps it large (a second tap lets it follow the speaker).
  tiles.addEventListener("click", (ev) => {
    const hit = ev.target.closest(".tile:not(.tile-self)");
    if (!hit || !document.body.classList.contains("is-phone")) return;
    const pin = hit.dataset.pinned !== "1";
    for (const t of tiles.querySelectorAll(".tile")) delete t.dataset.pinned;
    if (pin) hit.dataset.pinned = "1";
    pickMain(tiles);
  });
  observer.observe(tiles, { childList: true, subtree: true, attributes: true, attributeFilter: ["class"] });
  const bar = el("div", { class: "ctl-group sheet-bar phone-only" });
  const close = el("button", { type: "button", class: "quiet sheet-close phone-only", testid: "sheet-close", i18n: "phone.sheet_close" });
  const open = (id) => {
    const same = document.body.dataset.sheet === id;
    if (same || !id) {
      delete document.body.dataset.sheet;
    } else {
      document.body.dataset.sheet = id;
      panels.select(id); // tabs (staff, reviewer); stacked sections (applicant): CSS shows one
      panels.panel(id)?.scrollIntoView({ block: "start" });
    }
    for (const b of bar.children) b.setAttribute("aria-expanded", String(b.dataset.sheet === document.body.dataset.sheet));
    if (document.body.dataset.sheet) close.focus();
  };
  for (const [id, key] of sheetsFor(role)) {
    if (!panels.panel(id)) continue;
    bar.append(el("button", { type: "button", class: "ctl quiet", testid: `sheet-${id}`, i18n: key, data: { sheet: id }, attrs: { "aria-expanded": "false", "aria-controls": "side" }, on: { click: () => open(id) } }));
  }
  controls.prepend(bar);
  side.prepend(close);
  close.addEventListener("click", () => open(null));
  side.addEventListener("keydown", (ev) => ev.key === "Escape" && open(null));
  const apply = () => {
    document.body.classList.toggle("is-phone", media.matches);
    if (!media.matches) delete document.body.dataset.sheet;
  };
  media.addEventListener("change", apply);
  // Sheets, popovers and toasts sit just above the control bar, however tall it wraps.
  const height = () => document.documentElement.style.setProperty("--phone-bar", `${controls.offsetHeight}px`);
  new ResizeObserver(height).observe(controls);
  apply();
  pickMain(tiles);
}
