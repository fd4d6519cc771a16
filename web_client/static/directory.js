// The department directory as this node holds it (/admin/directory, admins only): where it
// was loaded from and when, its departments (with their level) and its users, and a
// button that reloads it from the server's directory file on every node, without a
// restart (the file is written by `jointreview directory import`).
//
// HTTP: GET /api/admin/directory (its users a page at a time, by id: a search box asks
// with `q`, "Load more" follows `next_cursor`), POST /api/admin/directory/reload (422
// directory_invalid with each problem of the file: nothing changed).
import { api } from "/static/auth.js";
import { deptName } from "/static/i18n.js";
import { bootPage, el, errorI18n, fill } from "/static/ui.js";

const $ = (id) => document.getElementById(id);
const PAGE = 200; // users a page
let depts = new Map();
let users = []; // the pages shown so far
let next = null; // the next page's cursor
let query = "";

function row(...cells) {
  return el("tr", {}, cells.map((c) => el("td", {}, c)));
}

function code(text) {
  return el("code", { text });
}

// What loaded it: "start", "SIGHUP", "admin <sub>" or "node <node id>" (the server's words).
function via(text) {
  const [kind, ...rest] = text.split(" ");
  const who = rest.join(" ");
  if (kind === "start") return el("span", { i18n: "dir.via_start" });
  if (kind === "SIGHUP") return el("span", { i18n: "dir.via_signal" });
  if (kind === "admin") return el("span", { i18n: "dir.via_admin", args: { who } });
  if (kind === "node") return el("span", { i18n: "dir.via_node", args: { node: who } });
  return el("span", { text });
}

function drawState(state) {
  const items = [
    ["dir.file", state.file ? code(state.file) : el("span", { i18n: "dir.packaged" })],
    ["dir.loaded_at", el("time", { ts: state.loaded_at, tsStyle: "seconds" })],
    ["dir.via", via(state.via)],
    ["dir.node", code(state.node)],
    ["dir.digest", code(state.digest)],
  ];
  fill($("dir-state"), items.map(([key, value]) => [el("dt", { i18n: key }), el("dd", {}, value)]));
}

function deptCell(id) {
  if (!id) return el("span", { class: "muted", text: "—" });
  const d = depts.get(id);
  return el("span", {}, el("span", { text: d ? deptName(d) : id }), " ", code(id));
}

function userRow(u) {
  return row(code(u.sub), el("span", { text: u.name }), el("span", { i18n: `role.${u.role}` }), deptCell(u.dept), el("span", { text: u.window || "" }));
}

function draw(view, more) {
  drawState(view.state);
  depts = new Map(view.departments.map((d) => [d.id, d]));
  fill(
    $("dir-depts"),
    view.departments.map((d) => row(code(d.id), el("span", { text: d.name }), el("span", { text: d.name_en || "" }), el("span", { i18n: `level.${d.level}` }))),
  );
  if (more) $("dir-users").append(...view.users.map(userRow));
  else fill($("dir-users"), view.users.map(userRow));
  users = more ? users.concat(view.users) : view.users;
  next = view.next_cursor;
  $("dir-more").hidden = !next;
  fill($("dir-depts-count"), el("span", { i18n: "dir.count", args: { n: view.departments.length } }));
  fill($("dir-users-count"), el("span", { i18n: "dir.count", args: { n: view.state.users } }));
  fill($("dir-shown"), el("span", { i18n: "dir.shown", args: { n: users.length, total: view.matched } }));
}

// The first page of the users the search matches, or (more) the next one.
async function load(more = false) {
  const params = new URLSearchParams({ limit: String(PAGE) });
  if (query) params.set("q", query);
  if (more && next) params.set("cursor", next);
  draw(await api(`/api/admin/directory?${params}`), more);
}

async function step(more) {
  fill($("dir-error"));
  try {
    await load(more);
  } catch (err) {
    fill($("dir-error"), el("p", errorI18n(err)));
  }
}

function changeLine(key, change) {
  const args = { added: change.added.length, removed: change.removed.length, changed: change.changed.length };
  return el("li", { i18n: key, args });
}

async function reload() {
  const button = $("dir-reload");
  button.disabled = true;
  fill($("dir-result"));
  fill($("dir-error"));
  try {
    const done = await api("/api/admin/directory/reload", { method: "POST", body: {} });
    fill(
      $("dir-result"),
      el("p", { i18n: "dir.reloaded" }),
      el("ul", {}, changeLine("dir.changes_departments", done.changes.departments), changeLine("dir.changes_users", done.changes.users)),
    );
    await load();
  } catch (err) {
    if (err.code === "directory_invalid") {
      fill($("dir-error"), el("p", { i18n: "dir.invalid" }), el("ul", { testid: "dir-problems" }, err.details.map((d) => el("li", { text: d.problem }))));
    } else {
      fill($("dir-error"), el("p", errorI18n(err)));
    }
  } finally {
    button.disabled = false;
  }
}

async function main() {
  const claims = await bootPage($("app"), { roles: ["admin"] });
  if (!claims) return;
  $("dir-reload").addEventListener("click", reload);
  $("dir-more").addEventListener("click", () => step(true));
  $("dir-search").addEventListener("submit", (ev) => {
    ev.preventDefault();
    query = $("dir-q").value.trim();
    step(false);
  });
  await step(false);
}

main();
