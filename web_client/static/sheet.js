// The joint-review opinion sheet (联审会办意见单) to print: a PDF from GET
// /api/sessions/{sid}/opinion-sheet, fetched with the Bearer token and saved under the
// case's and session's names. Before the case file is sealed the server makes a draft
// (marked so on the sheet); after, it serves the sheet sealed into the case file. Right
// after the end the case file is being sealed (409 `recording_sealing`): asked again.
import { apiObjectUrl } from "/static/auth.js";
import { el, errorI18n, toast } from "/static/ui.js";

const SEALING_RETRY_MS = 1000;
const SEALING_TRIES = 15;

export async function downloadSheet(sid, caseId) {
  const path = `/api/sessions/${encodeURIComponent(sid)}/opinion-sheet`;
  for (let i = 0; ; i += 1) {
    try {
      const url = await apiObjectUrl(path);
      const a = el("a", { href: url, download: `${caseId || "case"}_${sid}_opinion_sheet.pdf`, hidden: true });
      document.body.append(a);
      a.click();
      a.remove();
      setTimeout(() => URL.revokeObjectURL(url), 60_000);
      return true;
    } catch (err) {
      if (err?.code === "recording_sealing" && i < SEALING_TRIES) {
        await new Promise((resolve) => setTimeout(resolve, SEALING_RETRY_MS));
        continue;
      }
      const { i18n, args } = errorI18n(err);
      toast(i18n, args, "bad");
      return false;
    }
  }
}

// A Print / 打印意见单 button (data-state: idle, busy, done, failed).
export function printButton(sid, caseId, { cls = "button" } = {}) {
  const button = el("button", { type: "button", class: cls, testid: "print-sheet", i18n: "sheet.print", data: { state: "idle", sessionId: sid } });
  button.addEventListener("click", () => printSheet(button, sid, typeof caseId === "function" ? caseId() : caseId));
  return button;
}

export async function printSheet(button, sid, caseId) {
  if (button.disabled) return;
  button.disabled = true;
  button.dataset.state = "busy";
  const ok = await downloadSheet(sid, caseId);
  button.dataset.state = ok ? "done" : "failed";
  button.disabled = false;
}
