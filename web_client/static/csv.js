// CSV export of the supervisor's tables, built in the page from the data it shows:
// UTF-8 with a byte-order mark (Excel then opens Chinese correctly), RFC 4180 quoting
// (a field with a comma, a quote or a line break is quoted, its quotes doubled), CRLF
// line ends. A field that starts with = + - @ is prefixed with ' so that a spreadsheet
// never runs it as a formula (a decline's reason or a note is typed by people).
const BOM = "\ufeff";

function cell(value) {
  if (value === null || value === undefined) return "";
  let s = typeof value === "number" ? String(value) : String(value);
  if (typeof value !== "number" && /^[=+\-@\t\r]/.test(s)) s = `'${s}`;
  return /[",\r\n]/.test(s) ? `"${s.replace(/"/g, '""')}"` : s;
}

// columns: [{label, value: (row) => any}]
export function toCsv(columns, rows) {
  const lines = [columns.map((c) => cell(c.label)).join(",")];
  for (const row of rows) lines.push(columns.map((c) => cell(c.value(row))).join(","));
  return BOM + lines.join("\r\n") + "\r\n";
}

// A file name without characters that file systems refuse.
export function csvName(...parts) {
  return `${parts.filter(Boolean).join("_").replace(/[\\/:*?"<>|\s]+/g, "-")}.csv`;
}

export function downloadCsv(name, columns, rows) {
  const blob = new Blob([toCsv(columns, rows)], { type: "text/csv;charset=utf-8" });
  const url = URL.createObjectURL(blob);
  const a = document.createElement("a");
  a.href = url;
  a.download = name;
  a.hidden = true;
  document.body.append(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(url), 10000);
}
