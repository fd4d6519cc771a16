import { api, signOut, takeTokenFromUrl } from "/static/auth.js";
import { applyI18n, t, toggleLang } from "/static/i18n.js";

applyI18n();
document.getElementById("lang").addEventListener("click", toggleLang);
const box = document.getElementById("who");
const message = document.getElementById("message");

function link(textKey, href, onClick) {
  const a = document.createElement("a");
  a.href = href;
  a.textContent = t(textKey);
  if (onClick) a.addEventListener("click", onClick);
  return a;
}

async function main() {
  if (!takeTokenFromUrl()) {
    message.textContent = t("home.not_signed_in");
    box.appendChild(link("home.go_login", "/login"));
    return;
  }
  try {
    const { identity } = await api("/api/me");
    const p = document.createElement("p");
    p.dataset.testid = "signed-in-as";
    p.textContent = `${t("home.signed_in_as")}: ${identity.name} (${t(`role.${identity.role}`)})`;
    box.appendChild(p);
    box.appendChild(link("home.sign_out", "/login", () => signOut()));
  } catch (err) {
    message.textContent = t(`error.${err.code}`) !== `error.${err.code}` ? t(`error.${err.code}`) : err.message;
    signOut();
    box.appendChild(link("home.go_login", "/login"));
  }
}
main();
