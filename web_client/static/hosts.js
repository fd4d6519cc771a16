// The admin's view of where media runs (GET /api/admin/media): every media host (a node's
// media worker) of every node with its load and whether its node drains, refreshed every
// 10 s. On the counter page, for admins only.
import { api } from "/static/auth.js";
import { clear, el } from "/static/ui.js";

const EVERY_MS = 10000;

function render(list, body) {
  clear(list);
  if (!body.hosts.length) list.append(el("li", { class: "muted", i18n: "counter.hosts_none" }));
  for (const h of body.hosts) {
    list.append(
      el(
        "li",
        { testid: "media-host", data: { host: h.host } },
        el("div", { class: "grow" }, el("div", { class: "case-no", text: h.host })),
        el("span", { class: "muted", text: `CPU ${Math.round(h.cpu * 100)}% · ${h.rooms} · ${h.streams}` }),
        el("span", { class: "chip", i18n: h.draining ? "counter.hosts_draining" : "counter.hosts_taking" }),
      ),
    );
  }
}

export async function showHosts(card) {
  const list = card.querySelector("ul");
  const refresh = async () => {
    try {
      render(list, await api("/api/admin/media"));
      card.hidden = false;
    } catch {
      // Not for this caller, or the server is away: the card stays as it was.
    }
  };
  await refresh();
  setInterval(refresh, EVERY_MS);
}
