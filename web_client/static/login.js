import { api } from "/static/auth.js";
import { applyI18n, t, toggleLang } from "/static/i18n.js";

applyI18n();
document.getElementById("lang").addEventListener("click", toggleLang);
const message = document.getElementById("message");

async function main() {
  let directory;
  try {
    directory = await api("/api/auth/demo-users");
  } catch (err) {
    message.textContent = err.code === "demo_disabled" ? t("login.disabled") : t("login.failed") + err.message;
    return;
  }
  const depts = Object.fromEntries(directory.departments.map((d) => [d.id, d]));
  const box = document.getElementById("users");
  for (const user of directory.users) {
    const button = document.createElement("button");
    button.dataset.testid = `login-${user.sub}`;
    const dept = user.dept ? depts[user.dept] : null;
    const deptName = dept ? (document.documentElement.lang === "en" && dept.name_en ? dept.name_en : dept.name) : "";
    const line2 = [t(`role.${user.role}`), dept ? t(`level.${dept.level}`) : "", deptName, user.window || ""]
      .filter(Boolean).join(" · ");
    button.innerHTML = `<strong></strong><br><span class="muted"></span>`;
    button.querySelector("strong").textContent = user.name;
    button.querySelector("span").textContent = line2;
    button.addEventListener("click", async () => {
      try {
        const res = await api("/api/auth/demo-login", { method: "POST", body: JSON.stringify({ sub: user.sub }) });
        sessionStorage.setItem("jr.token", res.token);
        location.href = "/";
      } catch (err) {
        message.textContent = t("login.failed") + err.message;
      }
    });
    box.appendChild(button);
  }
}
main();
