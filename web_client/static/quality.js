// Connection quality from RTCPeerConnection.getStats(): packet loss and frame rate of
// what we receive, round-trip time of the selected candidate pair. Shown as a calm chip
// (good / fair / poor) with the numbers.
import { clear, el } from "/static/ui.js";

export async function measure(pc, prev = {}) {
  const report = await pc.getStats();
  let lost = 0;
  let received = 0;
  let fps = 0;
  let videos = 0;
  let rtt = null;
  let sentFps = null;
  const inbound = [];
  report.forEach((s) => {
    if (s.type === "inbound-rtp") {
      lost += s.packetsLost || 0;
      received += s.packetsReceived || 0;
      if (s.kind === "video") {
        videos += 1;
        fps += s.framesPerSecond || 0;
        inbound.push({ mid: s.mid, framesDecoded: s.framesDecoded || 0 });
      }
    } else if (s.type === "outbound-rtp" && s.kind === "video" && s.framesPerSecond) {
      sentFps = Math.max(sentFps || 0, s.framesPerSecond);
    } else if (s.type === "candidate-pair" && s.nominated && s.state === "succeeded" && s.currentRoundTripTime !== undefined) {
      rtt = s.currentRoundTripTime * 1000;
    }
  });
  const dLost = Math.max(0, lost - (prev.lost || 0));
  const dReceived = Math.max(0, received - (prev.received || 0));
  const loss = dLost + dReceived ? (100 * dLost) / (dLost + dReceived) : 0;
  return { lost, received, loss, rtt, fps: videos ? fps / videos : sentFps, inbound };
}

export function grade(q) {
  if (!q) return "unknown";
  if (q.loss > 8 || (q.rtt !== null && q.rtt > 400)) return "poor";
  if (q.loss > 2 || (q.rtt !== null && q.rtt > 150)) return "fair";
  return "good";
}

export class QualityMeter {
  constructor(node, getPc) {
    this.node = node;
    this.getPc = getPc;
    this.prev = {};
    this.timer = setInterval(() => this.tick(), 2000);
  }

  async tick() {
    const pc = this.getPc();
    if (!pc || pc.connectionState !== "connected") {
      this.show(null);
      return;
    }
    try {
      const q = await measure(pc, this.prev);
      this.prev = q;
      this.show(q);
    } catch {
      this.show(null);
    }
  }

  show(q) {
    const level = grade(q);
    this.node.dataset.grade = level;
    const tone = { good: "ok", fair: "warn", poor: "bad", unknown: "muted" }[level];
    clear(this.node).append(el("span", { class: `chip chip-${tone}`, i18n: `quality.${level}` }));
    if (!q) return;
    this.node.dataset.loss = q.loss.toFixed(1);
    this.node.dataset.rtt = q.rtt === null ? "" : String(Math.round(q.rtt));
    this.node.dataset.fps = q.fps === null ? "" : String(Math.round(q.fps));
    this.node.append(...[
      el("span", { class: "q-num", i18n: "quality.loss", args: { v: q.loss.toFixed(1) } }),
      q.rtt === null ? null : el("span", { class: "q-num", i18n: "quality.rtt", args: { v: Math.round(q.rtt) } }),
      q.fps === null ? null : el("span", { class: "q-num", i18n: "quality.fps", args: { v: Math.round(q.fps) } }),
    ].filter(Boolean));
  }

  stop() {
    clearInterval(this.timer);
  }
}
