// The supervisor's tables and their CSV export, from one column list: what a table
// shows is what its CSV holds (in the current language), period and filters in the
// file's name. Also the period fields shared by the Statistics and Exceptions tabs.
import { downloadCsv, csvName } from "/static/csv.js";
import { t } from "/static/i18n.js";
import { el } from "/static/ui.js";

// columns: [{key: catalog key of the header, value: (row) => CSV value,
//            render?: (row) => node or text, num?: true}]
// tall: a long table (one row a day) scrolls within a bounded height.
export function dataTable({ columns, rows, testid, rowTestid, caption, rowData, tall = false }) {
  const head = el("tr", {}, columns.map((c) => el("th", { scope: "col", class: c.num ? "num" : null, i18n: c.key })));
  const body = el("tbody");
  for (const row of rows) {
    body.append(
      el(
        "tr",
        { testid: rowTestid, data: rowData ? rowData(row) : undefined },
        columns.map((c, i) => {
          const v = c.render ? c.render(row) : c.value(row);
          const content = v === null || v === undefined || v === "" ? "—" : v;
          return el(i === 0 ? "th" : "td", { class: c.num ? "num" : null, attrs: i === 0 ? { scope: "row" } : {} }, content);
        }),
      ),
    );
  }
  return el(
    "div",
    // A scrolling region must take the focus (keyboard users scroll it too).
    { class: `table-wrap${tall ? " tall" : ""}`, tabIndex: tall ? 0 : undefined, attrs: tall ? { role: "region", "aria-label": t("sup.table_of", { name: t(caption) }) } : {} },
    el("table", { class: "data", testid }, caption ? el("caption", { class: "sr-only", i18n: caption }) : null, el("thead", {}, head), body),
  );
}

// A "CSV" button for a table; rows() may be async (a paginated list fetched whole).
export function csvButton({ testid, nameParts, columns, rows, label = "sup.csv" }) {
  const button = el("button", {
    type: "button",
    class: "quiet csv-button",
    testid,
    i18n: label,
    on: {
      click: async () => {
        button.disabled = true;
        try {
          const data = await rows();
          const cols = columns.map((c) => ({ label: t(c.key), value: c.value }));
          downloadCsv(csvName(...nameParts().map((p) => (p.startsWith("@") ? t(p.slice(1)) : p))), cols, data);
        } finally {
          button.disabled = false;
        }
      },
    },
  });
  return button;
}

// -- the period (date inputs in the browser's zone; until is the whole day) ----------
export function ymd(date) {
  const p = (n) => String(n).padStart(2, "0");
  return `${date.getFullYear()}-${p(date.getMonth() + 1)}-${p(date.getDate())}`;
}

export function dayStart(value) {
  return value ? new Date(`${value}T00:00:00`).getTime() / 1000 : null;
}

// The first moment after the day `value` (the API's until is exclusive for stats).
export function dayAfter(value) {
  if (!value) return null;
  const d = new Date(`${value}T00:00:00`);
  d.setDate(d.getDate() + 1);
  return d.getTime() / 1000;
}

// Quick picks: [days back including today] or "year".
export function quickRange(pick, now = new Date()) {
  const until = ymd(now);
  if (pick === "year") return { since: `${now.getFullYear()}-01-01`, until };
  const d = new Date(now);
  d.setDate(d.getDate() - (Number(pick) - 1));
  return { since: ymd(d), until };
}

// Seconds as "12.5 秒" / "3 分 05 秒" (or "—").
export function seconds(s) {
  if (s === null || s === undefined) return null;
  if (s < 60) return t("sup.seconds", { n: s < 1 ? Math.round(s * 100) / 100 : Math.round(s * 10) / 10 });
  const m = Math.floor(s / 60);
  return t("sup.minutes_seconds", { m, s: String(Math.round(s % 60)).padStart(2, "0") });
}

export function periodFields(prefix, onPick) {
  const picks = [
    ["7", "sup.last_7"],
    ["30", "sup.last_30"],
    ["year", "sup.this_year"],
  ];
  const since = el("input", { id: `${prefix}-since`, type: "date", testid: `${prefix}-since` });
  const until = el("input", { id: `${prefix}-until`, type: "date", testid: `${prefix}-until` });
  const set = (pick) => {
    const r = quickRange(pick);
    since.value = r.since;
    until.value = r.until;
  };
  const node = [
    el("div", { class: "field" }, el("label", { attrs: { for: since.id }, i18n: "supervise.since" }), since),
    el("div", { class: "field" }, el("label", { attrs: { for: until.id }, i18n: "supervise.until" }), until),
    el(
      "div",
      { class: "field quick", attrs: { role: "group", "aria-labelledby": `${prefix}-quick-label` } },
      el("span", { id: `${prefix}-quick-label`, class: "label", i18n: "sup.quick" }),
      el(
        "div",
        { class: "quick-picks" },
        picks.map(([pick, key]) =>
          el("button", {
            type: "button",
            class: "quiet",
            testid: `${prefix}-pick-${pick}`,
            i18n: key,
            on: {
              click: () => {
                set(pick);
                onPick();
              },
            },
          }),
        ),
      ),
    ),
  ];
  return { node, since, until, set };
}
