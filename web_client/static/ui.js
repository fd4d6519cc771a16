// Small DOM helpers shared by the pages: element builder (with catalog keys, never
// literal text), status chips, calm toasts, the page header and fatal messages.
import { signOut, takeTokenFromUrl, tokenClaims, tokenExpired } from "/static/auth.js";
import { applyI18n, deptName, formatTs, has, onLangChange, t, toggleLang } from "/static/i18n.js";

// el("button", {i18n: "controls.leave", testid: "leave", on: {click}}, ...children)
export function el(tag, props = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(props)) {
    if (value === undefined || value === null || value === false) continue;
    switch (key) {
      case "class":
        node.className = value;
        break;
      case "testid":
        node.dataset.testid = value;
        break;
      case "i18n":
        node.dataset.i18n = value;
        if (props.args) node.dataset.i18nArgs = JSON.stringify(props.args);
        node.textContent = t(value, props.args);
        break;
      case "args":
        break;
      case "aria":
        node.dataset.i18nAria = value;
        node.setAttribute("aria-label", t(value));
        break;
      case "placeholder":
        node.dataset.i18nPlaceholder = value;
        node.placeholder = t(value);
        break;
      case "title":
        node.dataset.i18nTitle = value;
        node.title = t(value);
        break;
      case "text": // data, not UI copy (names, case numbers, chat text)
        node.textContent = value;
        break;
      case "ts":
        node.dataset.ts = value;
        if (props.tsStyle) node.dataset.tsStyle = props.tsStyle;
        node.textContent = formatTs(value, props.tsStyle);
        if (tag === "time") node.dateTime = new Date(value * 1000).toISOString();
        break;
      case "tsStyle":
        break;
      case "dept": // a department id, shown by name in the current language
        node.dataset.deptLabel = value;
        node.textContent = deptLabel(value);
        break;
      case "data":
        Object.assign(node.dataset, value);
        break;
      case "on":
        for (const [ev, fn] of Object.entries(value)) node.addEventListener(ev, fn);
        break;
      case "attrs":
        for (const [name, v] of Object.entries(value)) if (v !== false && v != null) node.setAttribute(name, v);
        break;
      case "style": // {property: value} through CSSOM: a style="" attribute breaks the CSP
        for (const [name, v] of Object.entries(value)) node.style.setProperty(name, v);
        break;
      default:
        node[key] = value;
    }
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

export function clear(node) {
  while (node.firstChild) node.firstChild.remove();
  return node;
}

// Replace a node's children (null, undefined and false are skipped, arrays flattened).
export function fill(node, ...children) {
  node.replaceChildren(...children.flat(2).filter((c) => c !== null && c !== undefined && c !== false));
  return node;
}

// Status chips: colour + text, never colour alone.
const TONES = {
  pending: "wait",
  ringing: "wait",
  unanswered: "warn",
  accepted: "ok",
  joined: "ok",
  declined: "bad",
  cancelled: "muted",
  left: "muted",
  reconnecting: "warn",
  active: "ok",
  ended: "muted",
};

export function chip(status, testid) {
  return el("span", { class: `chip chip-${TONES[status] || "muted"}`, i18n: `status.${status}`, testid, data: { status } });
}

// Who someone is: name, role and department (kept in the current language).
export function actorLine(actor, cls = "actor") {
  if (!actor) return el("span", { class: cls });
  return el(
    "span",
    { class: cls },
    el("strong", { class: "actor-name", text: actor.name || actor.sub }),
    actor.role ? el("span", { class: "actor-role", i18n: `role.${actor.role}` }) : null,
    actor.dept ? el("span", { class: "actor-dept", dept: actor.dept }) : null,
  );
}

// Departments for display (public: every role, the applicant too, may read them).
let deptMap = new Map();
let demoOn = false; // the server has a demo sign-in page (/login): only then is it linked
export async function loadDepartments() {
  try {
    const body = await (await fetch("/ui/departments.json")).json();
    deptMap = new Map(body.departments.map((d) => [d.id, d]));
    demoOn = body.demo === true;
  } catch {
    deptMap = new Map();
  }
  return deptMap;
}

// A "sign in again" link for fatal(): the demo sign-in page, or none (identities come
// from the approval system, and the notice says so).
export function loginLink(testid = "go-login") {
  // Back to this very address after signing in (a deep link keeps its case and its invitations).
  const here = location.pathname + location.search;
  const href = ["/", "/login"].includes(location.pathname) ? "/login" : `/login?${new URLSearchParams({ next: here })}`;
  return demoOn ? { href, key: "home.go_login", testid } : null;
}

export function departmentList() {
  return [...deptMap.values()];
}

export function department(id) {
  return deptMap.get(id);
}

export function deptLabel(id) {
  return deptName(deptMap.get(id)) || id || "";
}

onLangChange(() => {
  for (const node of document.querySelectorAll("[data-dept-label]")) node.textContent = deptLabel(node.dataset.deptLabel);
});

// -- toasts: a polite live region, no sound, no flashing ------------------------------
export function toast(key, args, tone = "info") {
  let region = document.getElementById("toasts");
  if (!region) {
    region = el("div", { id: "toasts", class: "toasts", attrs: { role: "status", "aria-live": "polite" } });
    document.body.append(region);
  }
  const item = el("div", { class: `toast toast-${tone}`, i18n: key, args, testid: "toast" });
  region.append(item);
  setTimeout(() => item.remove(), 6000);
}

// -- the page header: title, who is signed in, language switch, sign out ---------------
export async function setupHeader() {
  await loadDepartments();
  applyI18n();
  document.getElementById("lang")?.addEventListener("click", () => toggleLang());
  const who = document.getElementById("who");
  const claims = tokenClaims();
  if (!who || !claims) return;
  const parts = [
    el("span", { class: "who-name", text: claims.name || claims.sub, testid: "signed-in-as" }),
    el("span", { class: "who-role", i18n: `role.${claims.role}` }),
    claims.dept ? el("span", { class: "who-dept", dept: claims.dept }) : null,
    claims.role !== "applicant"
      ? el("a", { href: demoOn ? "/login" : "/", class: "who-out", i18n: "home.sign_out", on: { click: () => signOut() } })
      : null,
  ];
  fill(who, parts);
}

// A message in place of the page (expired sign-in, refused, ended...), with a way on.
export function fatal(container, key, { args, testid = "page-error", link, tone = "bad" } = {}) {
  clear(container);
  const box = el(
    "section",
    { class: `card notice notice-${tone}`, testid, attrs: { role: "alert" } },
    el("p", { class: "notice-text", i18n: key, args }),
  );
  if (link) box.append(el("a", { class: "button", href: link.href, i18n: link.key, testid: link.testid }));
  else if (link === null) box.append(el("p", { class: "muted", i18n: "home.open_portal", testid: "open-portal" }));
  container.append(box);
  return box;
}

// el() props for an API or signaling error: its code's message, or a generic one.
export function errorI18n(err) {
  const key = `error.${err?.code}`;
  if (has(key)) return { i18n: key };
  return { i18n: "error.generic", args: { message: err?.message || String(err) } };
}

// Where each role works: clerk -> counter, reviewer -> inbox, applicant -> their session.
export function homeOf(claims) {
  if (claims.role === "clerk" || claims.role === "admin") return "/counter";
  if (claims.role === "reviewer") return "/inbox";
  if (claims.role === "supervisor") return "/supervise";
  if (claims.role === "applicant" && claims.session) return `/session/${claims.session}`;
  return null;
}

// Every page starts here: take ?token=, check it is there and not expired (a clear
// message instead of a blank page), draw the header. Returns the claims, or null.
export async function bootPage(app, { roles } = {}) {
  const token = takeTokenFromUrl();
  await setupHeader();
  const login = loginLink();
  if (!token) {
    fatal(app, "error.not_signed_in", { tone: "info", link: login }).dataset.code = "not_signed_in";
    return null;
  }
  if (tokenExpired()) {
    fatal(app, "error.token_expired", { link: login }).dataset.code = "token_expired";
    return null;
  }
  const claims = tokenClaims();
  if (!claims) {
    fatal(app, "error.invalid_token", { link: login }).dataset.code = "invalid_token";
    return null;
  }
  if (roles && !roles.includes(claims.role)) {
    const home = homeOf(claims);
    const link = home ? { href: home, key: "home.go_mine", testid: "go-home" } : login;
    fatal(app, "error.wrong_screen", { link, args: { role: t(`role.${claims.role}`) } }).dataset.code = "wrong_screen";
    return null;
  }
  return claims;
}
