// The standalone demo directory's sign-in: pick a demo user (production takes identities
// from the approval system's signed tokens instead).
import { api, setToken, signOut } from "/static/auth.js";
import { clear, el, errorI18n, setupHeader } from "/static/ui.js";

const ORDER = ["clerk", "reviewer", "applicant", "supervisor", "admin"];

// Where the sign-in was asked from (?next=, ui.js loginLink): a path of this site only.
function nextPath() {
  const next = new URLSearchParams(location.search).get("next") || "";
  try {
    const url = new URL(next, location.origin);
    if (next.startsWith("/") && url.origin === location.origin) return url.pathname + url.search;
  } catch {
    // not a path: home
  }
  return "/";
}

async function main() {
  signOut();
  await setupHeader();
  const message = document.getElementById("message");
  let directory;
  try {
    directory = await api("/api/auth/demo-users");
  } catch (err) {
    clear(message).append(el("span", err.code === "demo_disabled" ? { i18n: "login.disabled" } : errorI18n(err)));
    return;
  }
  if (directory.exposed) {
    // Explicitly enabled on an address others can reach: anyone may become anyone here.
    const banner = el(
      "section",
      { class: "card notice notice-bad", testid: "demo-exposed", attrs: { role: "alert" } },
      el("p", { class: "notice-text", i18n: "login.exposed" }),
    );
    document.getElementById("app").prepend(banner);
  }
  const box = document.getElementById("users");
  for (const role of ORDER) {
    const users = directory.users.filter((u) => u.role === role);
    if (!users.length) continue;
    const list = el("div", { class: "users" });
    box.append(el("div", { class: "users-group" }, el("h3", { i18n: `role.${role}_plural` }), list));
    for (const user of users) {
      const detail = el(
        "span",
        {},
        user.dept ? el("span", { dept: user.dept }) : el("span", { i18n: `role.${user.role}` }),
        user.window ? el("span", { text: ` · ${user.window}` }) : null,
      );
      const button = el(
        "button",
        { type: "button", class: "user-card", testid: `login-${user.sub}` },
        el("strong", { text: user.name }),
        detail,
      );
      button.addEventListener("click", async () => {
        try {
          const res = await api("/api/auth/demo-login", { method: "POST", body: { sub: user.sub } });
          setToken(res.token);
          location.href = nextPath();
        } catch (err) {
          clear(message).append(el("span", errorI18n(err)));
        }
      });
      list.append(button);
    }
  }
}
main();
