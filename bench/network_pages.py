"""What ``jointreview bench network`` and the network tests read from the call page
(``window.jr.media``, its ``getStats()``, the chips and tiles): JavaScript functions for
Playwright's ``page.evaluate``. Readers return cumulative counters (the caller diffs
them); watchers note ``Date.now()`` of a change in a ``window`` object, polled 20 times a
second, so the times do not depend on how often Python looks.
"""

from __future__ import annotations

# The clerk's camera as the reviewer receives it (the page's only remote video in a
# two-party call): cumulative counters, to diff.
INBOUND_JS = """async () => {
  const m = window.jr.media;
  if (!m || !m.pc) return null;
  const stats = await m.pc.getStats();
  let out = null;
  stats.forEach((s) => {
    if (s.type !== "inbound-rtp" || s.kind !== "video") return;
    out = {frames: s.framesDecoded || 0, freezes: s.freezeCount || 0,
      frozen: s.totalFreezesDuration || 0, lost: s.packetsLost || 0,
      received: s.packetsReceived || 0, jb: s.jitterBufferDelay || 0,
      jbCount: s.jitterBufferEmittedCount || 0, bytes: s.bytesReceived || 0,
      rtx: s.retransmittedBytesReceived || 0, keyframes: s.keyFramesDecoded || 0,
      nacks: s.nackCount || 0, plis: s.pliCount || 0, width: s.frameWidth || 0};
  });
  return out;
}"""

# Whether the page shows another participant's video as paused (its link too thin: the
# SFU paused it, the tile says so), and the audio packets it has received (cumulative).
PAUSED_JS = """async () => {
  const m = window.jr.media;
  if (!m || !m.pc) return null;
  const stats = await m.pc.getStats();
  let audio = 0;
  stats.forEach((s) => {
    if (s.type === "inbound-rtp" && s.kind === "audio") audio += s.packetsReceived || 0;
  });
  const me = document.body.dataset.participantId;
  const paused = [...document.querySelectorAll("[data-testid=video-tile]")].some(
    (t) => t.dataset.participantId !== me && t.dataset.video === "paused");
  return {audio, paused};
}"""

# What the page sends of its camera: bytes, and the connection's state ("connected" …);
# ``pcs`` counts the RTCPeerConnections the page has had (a new one: media rebuilt).
OUTBOUND_JS = """async () => {
  const m = window.jr.media;
  if (!m || !m.pc) return null;
  if (m.pc !== window.jrLastPc) {
    window.jrLastPc = m.pc;
    window.jrPcs = (window.jrPcs || 0) + 1;
  }
  const stats = await m.pc.getStats();
  let bytes = 0, keyframes = 0, encoded = 0, width = 0, target = 0, limited = "";
  stats.forEach((s) => {
    if (s.type !== "outbound-rtp" || s.kind !== "video") return;
    bytes += s.bytesSent || 0;
    keyframes += s.keyFramesEncoded || 0;
    encoded += s.framesEncoded || 0;
    width = Math.max(width, s.frameWidth || 0);
    target += s.targetBitrate || 0;
    limited = s.qualityLimitationReason || limited;
  });
  return {bytes, keyframes, encoded, width, target, limited, state: m.pc.connectionState,
    pcs: window.jrPcs};
}"""

# On the others' page: when the given participant's tile first says "reconnecting", and
# the most tiles of other people seen at once (one person reconnecting, never two).
OTHERS_JS = """(pid) => {
  window.jrOthers = {away: null, most: 0};
  const tick = () => {
    const me = document.body.dataset.participantId;
    const tiles = [...document.querySelectorAll("[data-testid=video-tile]")].filter(
      (t) => t.dataset.participantId !== me);
    window.jrOthers.most = Math.max(window.jrOthers.most, tiles.length);
    const t = tiles.find((x) => x.dataset.participantId === pid);
    if (window.jrOthers.away === null && t && t.dataset.presence === "disconnected") {
      window.jrOthers.away = Date.now();
    }
    setTimeout(tick, 50);
  };
  tick();
}"""

# Whether every remote video of the given participants decodes: framesDecoded rising
# since the last call with the same ``seen`` (counted per connection). For composing:
# ``const rising = <this>;`` then ``await rising(window.jr.media, pids, seen)``.
RISING_JS = """async (m, pids, seen) => {
  const stats = await m.pc.getStats();
  const decoded = {};
  stats.forEach((s) => {
    if (s.type === "inbound-rtp" && s.kind === "video") decoded[s.mid] = s.framesDecoded || 0;
  });
  const pcId = m.pc._jrId || (m.pc._jrId = Math.random());
  return pids.every((pid) => {
    const videos = [...m.remotes.values()].filter(
      (r) => r.info.participant_id === pid && r.info.kind === "video");
    return videos.length > 0 && videos.every((r) => {
      const key = `${r.transceiver.mid}:${pcId}`;
      const now = decoded[r.transceiver.mid] || 0;
      const up = now > 0 && seen[key] !== undefined && now > seen[key];
      seen[key] = now;
      return up;
    });
  });
}"""

# Note (Date.now()) when the connection chip first leaves "open", when the quality chip
# first says "stalled", and, after ``window.jrNet.mark`` is set, when the socket is open
# again and when every remote video of the given participants decodes again.
WATCH_JS = """(pids) => {
  window.jrNet = {left: null, stalled: null, back: null, open: null};
  const chip = document.querySelector("[data-testid=connection-state]");
  const meter = document.querySelector("[data-testid=connection-quality]");
  const rising = @RISING@;
  const seen = {};
  const tick = async () => {
    if (window.jrNet.left === null && chip.dataset.state !== "open") window.jrNet.left = Date.now();
    if (window.jrNet.stalled === null && meter.dataset.grade === "stalled") {
      window.jrNet.stalled = Date.now();
    }
    if (window.jrNet.mark && window.jrNet.open === null && chip.dataset.state === "open") {
      window.jrNet.open = Date.now();
    }
    const m = window.jr.media;
    if (window.jrNet.mark && window.jrNet.back === null && m.pc && (await rising(m, pids, seen))) {
      window.jrNet.back = Date.now();
    }
    if (window.jrNet.back === null || window.jrNet.open === null) setTimeout(tick, 50);
  };
  tick();
}""".replace("@RISING@", RISING_JS)
