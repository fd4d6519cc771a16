// The counter's deep link, for the approval system: /counter?case=&applicant=&matter=
// &window=&invite=dept1,dept2[&start=1]. Read and checked here (the server checks again);
// what is wrong is reported, never silently dropped, and then nothing starts by itself.
const CASE_ID = /^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$/;
const FIELDS = [
  // [parameter, input id, most characters (as the server's CreateSessionBody)]
  ["case", "case-number", 64],
  ["applicant", "applicant-name", 100],
  ["matter", "matter", 500],
  ["window", "window", 100],
];

// {values: {inputId: text}, invalid: [inputId], known: [dept], unknown: [dept],
//  start: bool, given: bool} from the page's query string and the directory's departments.
export function readDeepLink(search, departments) {
  const q = new URLSearchParams(search);
  const link = { values: {}, invalid: [], known: [], unknown: [], start: q.get("start") === "1", given: false };
  for (const [param, id, max] of FIELDS) {
    const value = (q.get(param) || "").trim();
    if (!value) continue;
    link.given = true;
    link.values[id] = value;
    if (value.length > max || (param === "case" && !CASE_ID.test(value))) link.invalid.push(id);
  }
  const ids = new Set(departments.map((d) => d.id));
  const wanted = [...new Set((q.get("invite") || "").split(",").map((s) => s.trim()).filter(Boolean))];
  for (const dept of wanted) (ids.has(dept) ? link.known : link.unknown).push(dept);
  link.given ||= wanted.length > 0;
  return link;
}

// Starts by itself only when the link asked to and everything in it is right.
export function startsAtOnce(link) {
  return link.start && Boolean(link.values["case-number"]) && !link.invalid.length && !link.unknown.length;
}

// The address without `start=1`: back or reload must not start a second session.
export function dropStart() {
  const url = new URL(location.href);
  if (!url.searchParams.has("start")) return;
  url.searchParams.delete("start");
  history.replaceState(null, "", url.pathname + url.search + url.hash);
}
