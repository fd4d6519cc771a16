// The Statistics tab (统计) of /supervise: GET /api/stats?since&until&dept&window for a
// period (date fields, or 7 days / 30 days / this year) and a department or window;
// the totals, three charts drawn here (charts.js: answers per department, answer time
// p50/p90 per department, sessions per day) and the tables (departments, days,
// windows, matters), each exportable as CSV (suptable.js).
import { api } from "/static/auth.js";
import { barChart, columnChart } from "/static/charts.js";
import { t } from "/static/i18n.js";
import { csvButton, dataTable, dayAfter, dayStart, periodFields, seconds } from "/static/suptable.js";
import { deptLabel, departmentList, el, errorI18n, fill } from "/static/ui.js";

const ANSWERS = [
  { key: "accepted", cls: "s-ok", label: "status.accepted" },
  { key: "declined", cls: "s-bad", label: "status.declined" },
  { key: "unanswered", cls: "s-warn", label: "status.unanswered" },
];
const TIMES = [
  { key: "answer_s_p50", cls: "s-p50", label: "stats.p50" },
  { key: "answer_s_p90", cls: "s-p90", label: "stats.p90" },
];
const OPINIONS = ["approve", "materials_missing", "refer", "note"];

const level = (row) => (row.level ? t(`level.${row.level}`) : null);
const DEPT_COLUMNS = [
  { key: "stats.col_dept", value: (r) => deptLabel(r.dept) || r.name },
  { key: "stats.col_level", value: level },
  { key: "stats.col_invited", value: (r) => r.invited, num: true },
  { key: "status.accepted", value: (r) => r.accepted, num: true },
  { key: "status.declined", value: (r) => r.declined, num: true },
  { key: "status.unanswered", value: (r) => r.unanswered, num: true },
  { key: "stats.col_answer_p50", value: (r) => r.answer_s_p50, render: (r) => seconds(r.answer_s_p50), num: true },
  { key: "stats.col_answer_p90", value: (r) => r.answer_s_p90, render: (r) => seconds(r.answer_s_p90), num: true },
  ...OPINIONS.map((d) => ({ key: `opinion.decision_${d}`, value: (r) => r.opinions[d], num: true })),
];
const DAY_COLUMNS = [
  { key: "stats.col_date", value: (r) => r.date },
  { key: "stats.col_sessions", value: (r) => r.sessions, num: true },
  { key: "stats.col_invitations", value: (r) => r.invitations, num: true },
  { key: "status.accepted", value: (r) => r.accepted, num: true },
  { key: "status.unanswered", value: (r) => r.unanswered, num: true },
];
const ENDS = [
  { key: "stats.col_sessions", value: (r) => r.sessions, num: true },
  { key: "stats.col_ended", value: (r) => r.ended, num: true },
  { key: "stats.col_broken_off", value: (r) => r.broken_off, num: true },
];
const WINDOW_COLUMNS = [
  { key: "stats.col_window", value: (r) => r.window },
  ...ENDS,
  { key: "stats.col_duration_p50", value: (r) => r.duration_s_p50, render: (r) => seconds(r.duration_s_p50), num: true },
  { key: "stats.col_duration_p90", value: (r) => r.duration_s_p90, render: (r) => seconds(r.duration_s_p90), num: true },
];
const MATTER_COLUMNS = [{ key: "stats.col_matter", value: (r) => r.matter }, ...ENDS];

export class StatsTab {
  constructor(panel) {
    this.panel = panel;
    this.data = null;
    this.period = periodFields("stats", () => this.load());
    this.dept = el("select", { id: "stats-dept", testid: "stats-dept" }, el("option", { value: "", i18n: "supervise.dept_any" }));
    for (const d of departmentList()) this.dept.append(el("option", { value: d.id, dept: d.id }));
    this.windows = el("datalist", { id: "stats-windows" });
    this.window = el("input", { id: "stats-window", testid: "stats-window", autocomplete: "off", maxLength: 64, attrs: { list: "stats-windows" }, placeholder: "stats.window_any" });
    this.error = el("p", { class: "form-error", attrs: { role: "alert" } });
    this.status = el("span", { class: "muted", attrs: { role: "status", "aria-live": "polite" } });
    this.body = el("div", { class: "stats-body", testid: "stats-body" });
    const form = el(
      "form",
      { class: "filter-form", testid: "stats-form", novalidate: true, on: { submit: (ev) => (ev.preventDefault(), this.load()) } },
      this.period.node,
      el("div", { class: "field" }, el("label", { attrs: { for: "stats-dept" }, i18n: "supervise.dept" }), this.dept),
      el("div", { class: "field" }, el("label", { attrs: { for: "stats-window" }, i18n: "stats.window" }), this.window, this.windows),
      el("div", { class: "field search-go" }, el("button", { type: "submit", class: "primary", testid: "stats-submit", i18n: "supervise.search" })),
    );
    panel.append(
      el("section", { class: "card", attrs: { "aria-labelledby": "stats-heading" } }, el("div", { class: "card-head" }, el("h2", { id: "stats-heading", i18n: "stats.heading" }), this.status), form, this.error),
      this.body,
    );
    this.period.set("30");
  }

  query() {
    const q = new URLSearchParams();
    const since = dayStart(this.period.since.value);
    const until = dayAfter(this.period.until.value);
    if (since !== null) q.set("since", String(since));
    if (until !== null) q.set("until", String(until));
    if (this.dept.value) q.set("dept", this.dept.value);
    if (this.window.value.trim()) q.set("window", this.window.value.trim());
    return q;
  }

  async load() {
    fill(this.error);
    fill(this.status, el("span", { i18n: "supervise.loading" }));
    try {
      this.data = await api(`/api/stats?${this.query()}`);
    } catch (err) {
      fill(this.status);
      fill(this.error, el("span", errorI18n(err)));
      return;
    }
    fill(this.status);
    for (const w of this.data.windows) if (![...this.windows.options].some((o) => o.value === w.window)) this.windows.append(el("option", { value: w.window }));
    this.render();
  }

  // The CSV's name: 统计_部门_2026-12-01_2026-12-06(_dept)(_window).csv
  nameParts(tableKey) {
    return () => ["@stats.csv_prefix", `@${tableKey}`, this.period.since.value, this.period.until.value, this.dept.value, this.window.value.trim()];
  }

  section(titleKey, testid, columns, rows, extra, tall = false) {
    return el(
      "section",
      { class: "card", testid: `${testid}-card`, attrs: { "aria-labelledby": `${testid}-h` } },
      el(
        "div",
        { class: "card-head" },
        el("h2", { id: `${testid}-h`, i18n: titleKey }),
        csvButton({ testid: `${testid}-csv`, nameParts: this.nameParts(titleKey), columns, rows: async () => rows }),
      ),
      extra,
      rows.length ? dataTable({ columns, rows, testid, rowTestid: `${testid}-row`, caption: titleKey, tall }) : el("p", { class: "muted", i18n: "stats.none" }),
    );
  }

  render() {
    const d = this.data;
    if (!d) return;
    const s = d.sessions;
    const inv = d.invitations;
    const figure = (key, value, testid) => el("div", { class: "figure", testid: `stat-${testid}`, data: { value: String(value ?? "") } }, el("dt", { i18n: key }), el("dd", { text: value ?? "—" }));
    const totals = el(
      "section",
      { class: "card", attrs: { "aria-labelledby": "stats-totals-h" } },
      el("h2", { id: "stats-totals-h", i18n: "stats.totals" }),
      el(
        "dl",
        { class: "figures" },
        figure("stats.sessions_total", s.total, "sessions-total"),
        figure("stats.col_ended", s.ended, "sessions-ended"),
        figure("stats.col_broken_off", s.broken_off, "sessions-broken-off"),
        figure("stats.col_duration_p50", seconds(s.duration_s_p50), "duration-p50"),
        figure("stats.col_duration_p90", seconds(s.duration_s_p90), "duration-p90"),
        figure("stats.invitations_total", inv.total, "invitations-total"),
        figure("status.accepted", inv.accepted, "accepted"),
        figure("status.declined", inv.declined, "declined"),
        figure("status.unanswered", inv.unanswered, "unanswered"),
        figure("status.cancelled", inv.cancelled, "cancelled"),
      ),
    );
    const invited = d.departments.filter((r) => r.invited > 0);
    const label = (r) => deptLabel(r.dept) || r.name;
    const series = (list) => list.map((x) => ({ ...x, label: t(x.label) }));
    const charts = el(
      "section",
      { class: "card charts", attrs: { "aria-labelledby": "stats-charts-h" } },
      el("h2", { id: "stats-charts-h", i18n: "stats.charts" }),
      invited.length
        ? [
            barChart({ title: t("stats.chart_answers"), testid: "chart-answers", stacked: true, series: series(ANSWERS), axisLabel: t("stats.axis_invitations"), rows: invited.map((r) => ({ key: r.dept, label: label(r), values: r })) }),
            barChart({ title: t("stats.chart_answer_time"), testid: "chart-answer-time", series: series(TIMES), axisLabel: t("stats.axis_seconds"), unit: t("stats.unit_s"), rows: invited.filter((r) => r.answer_s_p50 !== null).map((r) => ({ key: r.dept, label: label(r), values: r })) }),
          ]
        : el("p", { class: "muted", i18n: "stats.no_invitations" }),
      columnChart({ title: t("stats.chart_days"), testid: "chart-days", series: series([{ key: "sessions", cls: "s-sessions", label: "stats.col_sessions" }]), axisLabel: t("stats.axis_day"), yLabel: t("stats.col_sessions"), items: d.by_day.map((r) => ({ key: r.date, label: r.date, short: r.date.slice(5), values: r })) }),
    );
    fill(
      this.body,
      totals,
      charts,
      this.section("stats.departments", "stats-departments", DEPT_COLUMNS, d.departments),
      this.section("stats.by_day", "stats-days", DAY_COLUMNS, d.by_day, null, true),
      el("div", { class: "two-cols" }, this.section("stats.windows", "stats-windows", WINDOW_COLUMNS, d.windows), this.section("stats.matters", "stats-matters", MATTER_COLUMNS, d.matters)),
    );
  }
}
