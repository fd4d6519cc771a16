// Message catalogs: every string the UI shows lives here. zh-CN first, English available.
const CATALOGS = {
  "zh-CN": {
    "app.title": "远程视频联审会办",
    "login.title": "登录（演示目录）",
    "login.hint": "选择一个演示用户登录。正式部署由审批系统签发身份，不使用此页面。",
    "login.disabled": "本服务器已关闭演示登录，请从审批系统进入。",
    "login.failed": "登录失败：",
    "role.clerk": "窗口工作人员",
    "role.reviewer": "审批人员",
    "role.applicant": "申请人",
    "role.supervisor": "监督人员",
    "role.admin": "管理员",
    "level.city": "市级",
    "level.district": "区级",
    "home.signed_in_as": "当前用户",
    "home.sign_out": "退出登录",
    "home.not_signed_in": "尚未登录。",
    "home.go_login": "前往登录",
    "error.token_expired": "登录已过期，请重新登录。",
    "error.invalid_token": "登录凭证无效，请重新登录。",
    "lang.switch": "English",
  },
  "en": {
    "app.title": "Remote Video Joint Review",
    "login.title": "Sign in (demo directory)",
    "login.hint": "Pick a demo user. Production deployments take identities from the approval system instead.",
    "login.disabled": "Demo sign-in is turned off on this server; open jointreview from the approval system.",
    "login.failed": "Sign-in failed: ",
    "role.clerk": "Window clerk",
    "role.reviewer": "Reviewer",
    "role.applicant": "Applicant",
    "role.supervisor": "Supervisor",
    "role.admin": "Administrator",
    "level.city": "City",
    "level.district": "District",
    "home.signed_in_as": "Signed in as",
    "home.sign_out": "Sign out",
    "home.not_signed_in": "You are not signed in.",
    "home.go_login": "Go to sign-in",
    "error.token_expired": "Your sign-in has expired. Please sign in again.",
    "error.invalid_token": "Your sign-in is not valid. Please sign in again.",
    "lang.switch": "中文",
  },
};

export function lang() {
  return localStorage.getItem("jr.lang") || "zh-CN";
}

export function t(key) {
  return (CATALOGS[lang()] || CATALOGS["zh-CN"])[key] ?? CATALOGS["zh-CN"][key] ?? key;
}

export function toggleLang() {
  localStorage.setItem("jr.lang", lang() === "zh-CN" ? "en" : "zh-CN");
  location.reload();
}

// Fill every element carrying data-i18n with its catalog text.
export function applyI18n(root = document) {
  document.documentElement.lang = lang();
  for (const el of root.querySelectorAll("[data-i18n]")) el.textContent = t(el.dataset.i18n);
}
