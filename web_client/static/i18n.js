// Message catalogs and locale formatting. Every string the UI shows lives in the catalogs
// (i18n/zh-CN.js, i18n/en.js); zh-CN first, English available. Elements carry their key
// (data-i18n, data-i18n-args, data-i18n-aria, data-i18n-placeholder, data-i18n-title) and
// timestamps (data-ts), so switching language re-renders the page in place: no reload
// (a reload would interrupt a live session).
import en from "/static/i18n/en.js";
import zh from "/static/i18n/zh-CN.js";

const CATALOGS = { "zh-CN": zh, en };
const KEY = "jr.lang";
const listeners = new Set();

export function lang() {
  const chosen = localStorage.getItem(KEY);
  return CATALOGS[chosen] ? chosen : "zh-CN";
}

export function has(key) {
  return key in CATALOGS[lang()] || key in zh;
}

// t("invites.toast_accepted", {name: "王建国"}) -> the catalog text with {name} filled in.
export function t(key, args) {
  let text = CATALOGS[lang()][key] ?? zh[key];
  if (text === undefined) {
    console.warn("missing message", key);
    return key;
  }
  if (args) text = text.replace(/\{(\w+)\}/g, (m, name) => (name in args ? String(args[name]) : m));
  return text;
}

// t() for an optional key: the fallback key's text when `key` is not in the catalogs.
export function tOr(key, fallbackKey, args) {
  return has(key) ? t(key, args) : t(fallbackKey, args);
}

export function onLangChange(fn) {
  listeners.add(fn);
}

export function setLang(value) {
  localStorage.setItem(KEY, value);
  applyI18n();
  for (const fn of listeners) fn(value);
}

export function toggleLang() {
  setLang(lang() === "zh-CN" ? "en" : "zh-CN");
}

function argsOf(node) {
  return node.dataset.i18nArgs ? JSON.parse(node.dataset.i18nArgs) : undefined;
}

export function applyI18n(root = document) {
  if (root === document) {
    document.documentElement.lang = lang();
    const title = document.querySelector("title[data-i18n]");
    if (title) document.title = t(title.dataset.i18n);
  }
  for (const node of root.querySelectorAll("[data-i18n]")) node.textContent = t(node.dataset.i18n, argsOf(node));
  for (const node of root.querySelectorAll("[data-i18n-aria]")) node.setAttribute("aria-label", t(node.dataset.i18nAria));
  for (const node of root.querySelectorAll("[data-i18n-placeholder]")) node.placeholder = t(node.dataset.i18nPlaceholder);
  for (const node of root.querySelectorAll("[data-i18n-title]")) node.title = t(node.dataset.i18nTitle);
  for (const node of root.querySelectorAll("[data-ts]")) node.textContent = formatTs(node.dataset.ts, node.dataset.tsStyle);
}

// -- dates, times and names in the user's locale --------------------------------------
const STYLES = {
  time: { hour: "2-digit", minute: "2-digit" },
  seconds: { hour: "2-digit", minute: "2-digit", second: "2-digit" },
  datetime: { dateStyle: "medium", timeStyle: "short" },
};

export function formatTs(ts, style = "time") {
  const date = new Date(Number(ts) * 1000);
  return new Intl.DateTimeFormat(lang(), STYLES[style] || STYLES.time).format(date);
}

// A department record ({name, name_en}) in the current language.
export function deptName(dept) {
  if (!dept) return "";
  return lang() === "en" && dept.name_en ? dept.name_en : dept.name;
}
