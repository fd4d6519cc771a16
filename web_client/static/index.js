// Home: send each role to its screen; a clear message when the sign-in is missing or
// expired, or when the role has no screen here (a supervisor).
import { api } from "/static/auth.js";
import { bootPage, el, errorI18n, fatal, homeOf, loginLink } from "/static/ui.js";

const app = document.getElementById("app");

async function main() {
  const claims = await bootPage(app);
  if (!claims) return;
  let identity;
  try {
    ({ identity } = await api("/api/me"));
  } catch (err) {
    const box = fatal(app, "error.generic", { link: loginLink() });
    box.querySelector(".notice-text").replaceWith(el("p", { class: "notice-text", ...errorI18n(err) }));
    return;
  }
  const target = homeOf({ ...claims, ...identity });
  if (target) location.replace(target);
  else fatal(app, "home.no_screen", { tone: "info", args: { name: identity.name } });
}
main();
