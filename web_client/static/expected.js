// Expected states asked about with requests that answer 200 either way, so that a normal
// state is not a failed request (4xx) in the browser's console (issue #16):
// - whether an ended session's case file is sealed yet, from the case's track (GET
//   /api/cases/{case}/track: each session's `sealed_at`). The case file's index, the
//   replay description and the opinion sheet answer 409 `recording_sealing` for the few
//   seconds the media node takes to close the recording;
// - whether a case ever had a joint review (GET /api/sessions?case=&limit=1), where the
//   case's own routes answer 404 `case_not_found`. Staff and supervisors only (the list's
//   roles).
import { api } from "/static/auth.js";

export const LISTERS = ["clerk", "supervisor", "admin"];

export async function caseKnown(caseId) {
  const { sessions } = await api(`/api/sessions?${new URLSearchParams({ case: caseId, limit: "1" })}`);
  return sessions.length > 0;
}

// The session's `sealed_at` (epoch seconds), or null while it is not sealed.
export async function sealedAt(caseId, sid) {
  const path = `/api/cases/${encodeURIComponent(caseId)}/track`;
  let cursor = null;
  do {
    // The server's own page size (page_default): no limit here can exceed its page_max.
    const page = await api(cursor ? `${path}?${new URLSearchParams({ cursor })}` : path);
    const found = page.sessions.find((x) => x.session.session_id === sid);
    if (found) return found.sealed_at ?? null;
    cursor = page.next_cursor;
  } while (cursor);
  return null;
}

// Waits until sealed: true, or false after `tries` looks `everyMs` apart (or when
// `stop()` says the page moved on).
export async function untilSealed(caseId, sid, { tries = 20, everyMs = 750, stop = () => false } = {}) {
  for (let i = 0; i < tries; i += 1) {
    if (stop()) return false;
    if ((await sealedAt(caseId, sid)) !== null) return true;
    await new Promise((resolve) => setTimeout(resolve, everyMs));
  }
  return false;
}
