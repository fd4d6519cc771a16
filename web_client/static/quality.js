// Connection quality from RTCPeerConnection.getStats(): packet loss and frame rate of
// what we receive, round-trip time of the selected candidate pair. Shown as a calm chip
// (good / fair / poor) with the numbers; "stalled" when a video the server says is
// published has decoded no frame for STALL_MS (a cut link: never "good … 0 fps");
// "paused" when the SFU paused a video for us because our link is too thin.
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

const STALL_MS = 2000;
const TICK_MS = 500;

export function grade(q) {
  if (!q) return "unknown";
  if (q.stalled) return "stalled";
  if (q.paused) return "paused";
  const slow = q.watching && q.fps !== null; // frames count only where video is expected
  if (q.loss > 8 || (q.rtt !== null && q.rtt > 400) || (slow && q.fps < 5)) return "poor";
  if (q.loss > 2 || (q.rtt !== null && q.rtt > 150) || (slow && q.fps < 10)) return "fair";
  return "good";
}

// Which of the live videos (mids) decoded no new frame for STALL_MS; `seen` keeps, per
// mid, the last count and when it last rose.
export function stalledMids(inbound, live, seen, now) {
  const out = [];
  const frames = new Map(inbound.map((s) => [s.mid, s.framesDecoded]));
  for (const mid of live) {
    const count = frames.get(mid) || 0;
    const last = seen.get(mid);
    if (!last || count !== last.count) seen.set(mid, { count, at: now }); // a new connection counts from 0
    else if (now - last.at >= STALL_MS) out.push(mid);
  }
  for (const mid of seen.keys()) if (!live.has(mid)) seen.delete(mid);
  return out;
}

export class QualityMeter {
  // getLive: the mids of the remote videos the server says are published now.
  constructor(node, getPc, getLive = () => new Set(), getPaused = () => 0) {
    this.node = node;
    this.getPc = getPc;
    this.getLive = getLive;
    this.getPaused = getPaused;
    this.prev = {};
    this.seen = new Map();
    this.timer = setInterval(() => this.tick(), TICK_MS);
  }

  async tick() {
    const pc = this.getPc();
    if (!pc || pc.connectionState === "closed") {
      this.show(null);
      return;
    }
    try {
      if (pc !== this.pc) this.seen.clear(); // a rebuilt connection: its mids start afresh
      this.pc = pc;
      const live = this.getLive();
      const q = await measure(pc, this.prev);
      q.watching = live.size > 0;
      q.stalled = stalledMids(q.inbound, live, this.seen, Date.now()).length > 0;
      q.paused = this.getPaused() > 0;
      this.prev = q;
      this.show(pc.connectionState === "connected" || q.stalled ? q : null);
    } catch {
      this.show(null);
    }
  }

  show(q) {
    const level = grade(q);
    this.node.dataset.grade = level;
    const tone = { good: "ok", fair: "warn", poor: "bad", unknown: "muted", stalled: "bad", paused: "warn" }[level];
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
