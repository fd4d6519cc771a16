// Replay at once: a recorded session played from its per-track files, in sync.
//
// One master clock (seconds from the recording's start). Every track is a <video> or
// <audio> element whose file starts at `offset_s` on that clock, so it shows
// `master - offset_s`; before its offset (or after its end) it is paused and hidden.
// Play, pause and seek act on all of them together. While playing, each element's
// drift from the clock is corrected: a nudge of its playbackRate above 0.1 s, a seek
// above 0.5 s; the clock holds (everyone paused) while an element catches up after a
// seek, for 3 s at most. Several <audio> elements playing at once are the audio mix.
//
// The files come from `track.src`: a short-lived grant URL minted by the server for
// this viewer (a <video src> cannot send the Bearer token). When one fails (the grant
// expired), the page asks for the description again and swaps the sources in place.
import { apiObjectUrl } from "/static/auth.js";
import { t } from "/static/i18n.js";
import { actorLine, clear, el, fill } from "/static/ui.js";

const TICK_MS = 50;
const NUDGE_S = 0.1;
const SEEK_S = 0.5;
const HOLD_MAX_MS = 3000;
// Timeline rows of markers: [label key, marker types].
const ROWS = [
  ["replay.row_presence", ["join", "leave"]],
  ["replay.type_invitation", ["invitation"]],
  ["replay.type_chat", ["chat"]],
  ["replay.type_snapshot", ["snapshot"]],
  ["replay.type_opinion", ["opinion"]],
  ["replay.type_recording", ["recording"]],
];

export function clock(s) {
  const v = Math.max(0, s || 0);
  const m = Math.floor(v / 60);
  const sec = Math.floor(v % 60);
  return `${String(m).padStart(2, "0")}:${String(sec).padStart(2, "0")}.${Math.floor((v % 1) * 10)}`;
}

// The most telling label of a marker: "accepted" rather than "invitation".
function whatKey(m) {
  if (m.type === "invitation" || m.type === "recording") return `replay.${m.type}_${m.data?.state}`;
  return `replay.type_${m.type}`;
}

function ownerName(owner) {
  return owner?.name || owner?.sub || "";
}

export class ReplayPlayer {
  constructor(root, desc, { onSourcesExpired } = {}) {
    this.root = root;
    this.desc = desc;
    this.onSourcesExpired = onSourcesExpired;
    this.duration = Math.max(desc.recording.duration_s || 0, ...desc.markers.map((m) => m.t), 0.1);
    this.t = 0;
    this.playing = false;
    this.anchorT = 0;
    this.anchorWall = 0;
    this.holdSince = 0;
    this.selected = null;
    this.refreshing = null;
    this.objectUrls = [];
    this.media = [];
    this.pins = new Map(); // marker -> its button on the timeline
    this.items = new Map(); // marker -> its entry in the list of events
    this.build();
    this.timer = setInterval(() => this.tick(), TICK_MS);
    this.seek(0);
  }

  // -- building ------------------------------------------------------------------------
  build() {
    const tracks = this.desc.tracks;
    const docs = tracks.filter((x) => x.kind === "video" && x.source === "document");
    const cams = tracks.filter((x) => x.kind === "video" && x.source !== "document");
    this.tiles = el("div", { class: "replay-tiles", data: { count: String(cams.length) } });
    this.docStage = el("div", { class: "replay-doc", hidden: !docs.length });
    for (const track of [...docs, ...cams]) {
      const video = el("video", { muted: true, playsInline: true, preload: "auto", testid: "replay-video", data: { trackId: track.track_id } });
      video.disablePictureInPicture = true;
      const tile = el(
        "figure",
        { class: "replay-tile", testid: "replay-tile", data: { trackId: track.track_id, state: "before" } },
        video,
        el("div", { class: "replay-off", i18n: "replay.not_yet" }),
        el(
          "figcaption",
          { class: "tile-label" },
          el("strong", { text: ownerName(track.owner) }),
          el(
            "span",
            { class: "tile-meta" },
            track.owner?.role ? el("span", { i18n: `role.${track.owner.role}` }) : null,
            track.owner?.dept ? el("span", { dept: track.owner.dept }) : null,
            el("span", { i18n: `replay.source_${track.source || "camera"}` }),
          ),
        ),
      );
      (track.source === "document" ? this.docStage : this.tiles).append(tile);
      this.addMedia(track, video, tile);
    }
    const audio = el("div", { class: "replay-audio" });
    for (const track of tracks.filter((x) => x.kind === "audio")) {
      const node = el("audio", { preload: "auto", testid: "replay-audio", data: { trackId: track.track_id } });
      audio.append(node);
      this.addMedia(track, node, null);
    }
    const stage = el(
      "section",
      { class: `replay-stage${docs.length ? " has-document" : ""}`, aria: "replay.stage_label" },
      this.docStage,
      this.tiles,
      tracks.length ? null : el("p", { class: "replay-empty", testid: "replay-empty", i18n: this.desc.session.status === "active" ? "replay.live_note" : "replay.no_recording" }),
      audio,
    );
    this.detail = el("div", { class: "replay-detail", testid: "replay-detail" }, el("p", { class: "muted", i18n: "replay.detail_empty" }));
    this.events = el("ol", { class: "replay-events", testid: "replay-events" });
    for (const m of this.desc.markers) {
      const item = el(
        "li",
        {},
        el(
          "button",
          { type: "button", class: "replay-event", testid: "replay-event", data: { seq: String(m.seq), t: String(m.t), type: m.type }, on: { click: () => this.select(m, true) } },
          el("span", { class: "ev-time", text: clock(m.t) }),
          el("span", { class: `ev-dot ev-${m.type}`, attrs: { "aria-hidden": "true" } }),
          el("span", { class: "ev-what", i18n: whatKey(m) }),
          el("span", { class: "ev-who", text: ownerName(m.actor) }),
        ),
      );
      this.items.set(m, item);
      this.events.append(item);
    }
    const side = el(
      "aside",
      { class: "replay-side" },
      el("h2", { class: "panel-sub first", i18n: "replay.detail_heading" }),
      this.detail,
      el("h2", { class: "panel-sub", i18n: "replay.events_heading" }),
      this.events,
    );
    fill(this.root, el("div", { class: "replay-main" }, stage, side), this.controls());
  }

  addMedia(track, node, tile) {
    const m = { track, el: node, tile, offset: track.offset_s, ready: false, lagging: false };
    node.src = track.src;
    node.addEventListener("loadedmetadata", () => {
      m.ready = true;
      this.sync(true);
    });
    node.addEventListener("error", () => this.sourcesFailed());
    this.media.push(m);
  }

  controls() {
    this.playButton = el("button", { type: "button", class: "primary replay-play", testid: "replay-play", data: { state: "paused" }, i18n: "replay.play", on: { click: () => (this.playing ? this.pause() : this.play()) } });
    this.timeText = el("span", { class: "replay-time", testid: "replay-time", attrs: { role: "timer", "aria-live": "off" } });
    this.muteButton = el("button", { type: "button", class: "quiet", testid: "replay-mute", attrs: { "aria-pressed": "false" }, i18n: "replay.mute", on: { click: () => this.toggleMute() } });
    this.range = el("input", {
      type: "range",
      min: "0",
      max: String(this.duration),
      step: "0.01",
      value: "0",
      class: "tl-range",
      testid: "replay-seek",
      aria: "replay.seek_label",
      on: { input: () => this.seek(Number(this.range.value)) },
    });
    const pct = (s) => `${(100 * Math.min(Math.max(s, 0), this.duration)) / this.duration}%`;
    const rows = [el("div", { class: "tl-label" }), el("div", { class: "tl-area tl-scrub" }, this.range)];
    for (const m of this.media) {
      const x = m.track;
      const end = x.duration_s == null ? this.duration : x.offset_s + x.duration_s;
      rows.push(
        el("div", { class: "tl-label" }, el("span", { text: ownerName(x.owner) }), " ", el("span", { class: "muted", i18n: `replay.source_${x.source || x.kind}` })),
        el(
          "div",
          { class: "tl-area tl-lane", on: { click: (ev) => this.seekAt(ev) } },
          el("span", { class: `tl-bar tl-${x.kind}`, style: { left: pct(x.offset_s), width: `calc(${pct(end)} - ${pct(x.offset_s)})` } }),
        ),
      );
    }
    for (const [label, types] of ROWS) {
      const mine = this.desc.markers.filter((m) => types.includes(m.type));
      if (!mine.length) continue;
      const area = el("div", { class: "tl-area tl-markers", on: { click: (ev) => this.seekAt(ev) } });
      for (const m of mine) {
        const pin = el("button", {
          type: "button",
          class: `tl-marker ev-${m.type}`,
          testid: "replay-marker",
          data: { type: m.type, t: String(m.t), seq: String(m.seq) },
          style: { left: pct(m.t) },
          attrs: { "aria-label": this.markerLabel(m) },
          on: {
            click: (ev) => {
              ev.stopPropagation();
              this.select(m, true);
            },
          },
        });
        this.pins.set(m, pin);
        area.append(pin);
      }
      rows.push(el("div", { class: "tl-label", i18n: label }), area);
    }
    this.head = el("div", { class: "tl-head" });
    const timeline = el(
      "div",
      { class: "replay-timeline", testid: "replay-timeline", aria: "replay.timeline_label", attrs: { role: "group" } },
      rows,
      el("div", { class: "tl-head-layer" }, this.head),
    );
    return el(
      "footer",
      { class: "replay-controls" },
      el("div", { class: "replay-buttons" }, this.playButton, this.timeText, el("span", { class: "spacer" }), this.muteButton),
      // Scrolls when many lanes would push the stage away; the playhead spans every lane.
      el("div", { class: "tl-scroll" }, timeline),
    );
  }

  markerLabel(m) {
    return `${t(`replay.type_${m.type}`)} ${clock(m.t)} ${ownerName(m.actor)}`;
  }

  // Labels built from several keys, again in the new language.
  relabel() {
    for (const [m, pin] of this.pins) pin.setAttribute("aria-label", this.markerLabel(m));
  }

  // -- the clock -----------------------------------------------------------------------
  now() {
    if (!this.playing) return this.t;
    return Math.min(this.duration, this.anchorT + (performance.now() - this.anchorWall) / 1000);
  }

  anchor(tSec) {
    this.t = tSec;
    this.anchorT = tSec;
    this.anchorWall = performance.now();
  }

  play() {
    if (this.playing) return;
    if (this.t >= this.duration - 0.05) this.anchor(0);
    this.anchor(this.t);
    this.playing = true;
    this.holdSince = performance.now(); // start together: hold until every element is ready
    this.playButton.dataset.state = "playing";
    this.playButton.dataset.i18n = "replay.pause";
    this.playButton.textContent = t("replay.pause");
    this.sync(true);
  }

  pause() {
    this.anchor(this.now());
    this.playing = false;
    this.holdSince = 0;
    this.playButton.dataset.state = "paused";
    this.playButton.dataset.i18n = "replay.play";
    this.playButton.textContent = t("replay.play");
    for (const m of this.media) m.el.pause();
    this.sync(true);
  }

  seek(tSec) {
    this.anchor(Math.min(Math.max(0, tSec), this.duration));
    if (this.playing) this.holdSince = performance.now();
    this.sync(true);
  }

  seekAt(ev) {
    const box = ev.currentTarget.getBoundingClientRect();
    this.seek(((ev.clientX - box.left) / box.width) * this.duration);
  }

  toggleMute() {
    const muted = this.muteButton.getAttribute("aria-pressed") !== "true";
    for (const m of this.media) if (m.track.kind === "audio") m.el.muted = muted;
    this.muteButton.setAttribute("aria-pressed", String(muted));
    this.muteButton.dataset.i18n = muted ? "replay.unmute" : "replay.mute";
    this.muteButton.textContent = t(this.muteButton.dataset.i18n);
  }

  // Where each element should be at master time `now`, and whether it is in range.
  wanted(m, now) {
    const want = now - m.offset;
    const dur = Math.min(m.track.duration_s ?? Infinity, Number.isFinite(m.el.duration) ? m.el.duration : Infinity);
    // An ended element must not be played again: play() would start it over.
    const over = m.el.ended && want >= m.el.currentTime - 0.1;
    return { want, inRange: want >= 0 && want < dur - 0.04 && !over };
  }

  tick() {
    if (this.playing) {
      const now = performance.now();
      const waiting = this.media.filter((m) => {
        const { inRange } = this.wanted(m, this.now());
        const late = m.el.seeking || m.el.readyState < 3;
        if (m.lagging && !late) m.lagging = false;
        return inRange && m.ready && late && !m.lagging;
      });
      if (waiting.length && this.holdSince && now - this.holdSince < HOLD_MAX_MS) {
        this.anchor(this.anchorT); // the clock holds
        for (const m of this.media) if (!m.el.paused) m.el.pause();
      } else if (this.holdSince && !waiting.length) {
        this.holdSince = 0;
        this.anchor(this.anchorT);
      } else if (this.holdSince) {
        // Waited long enough: go on without the late ones, who join when they can.
        for (const m of waiting) m.lagging = true;
        this.holdSince = 0;
        this.anchor(this.anchorT);
      }
      if (this.now() >= this.duration) this.pause();
    }
    this.sync(false);
  }

  sync(force) {
    const now = this.now();
    const holding = this.playing && this.holdSince;
    for (const m of this.media) {
      const { want, inRange } = this.wanted(m, now);
      const state = want < 0 ? "before" : inRange ? (this.playing ? "playing" : "paused") : "after";
      if (m.tile && m.tile.dataset.state !== state) {
        m.tile.dataset.state = state;
        const off = m.tile.querySelector(".replay-off");
        off.dataset.i18n = state === "after" ? "replay.gone" : "replay.not_yet";
        off.textContent = t(off.dataset.i18n);
      }
      if (!m.ready) continue;
      const el_ = m.el;
      if (!inRange) {
        if (!el_.paused) el_.pause();
        // Parked at its start, ready for when the clock reaches it.
        if (want < 0 && el_.currentTime !== 0 && !el_.seeking) el_.currentTime = 0;
        continue;
      }
      if (!this.playing || holding) {
        if (Math.abs(el_.currentTime - want) > 0.02 && (force || !el_.seeking)) el_.currentTime = want;
        if (!el_.paused) el_.pause();
        el_.playbackRate = 1;
        continue;
      }
      const drift = el_.currentTime - want;
      if (Math.abs(drift) > SEEK_S || (force && Math.abs(drift) > 0.02)) {
        el_.currentTime = want;
        if (!m.lagging) this.holdSince = this.holdSince || performance.now();
      } else if (Math.abs(drift) > NUDGE_S) {
        el_.playbackRate = 1 - Math.max(-0.25, Math.min(0.25, drift * 0.5));
      } else if (Math.abs(drift) < 0.03) {
        el_.playbackRate = 1;
      }
      if (el_.paused && !el_.seeking) el_.play().catch((err) => console.warn("replay: play refused", err.name));
    }
    this.render(now);
  }

  render(now) {
    this.timeText.textContent = `${clock(now)} / ${clock(this.duration)}`;
    this.timeText.dataset.t = now.toFixed(3);
    if (document.activeElement !== this.range) this.range.value = String(now);
    this.head.style.left = `${(100 * now) / this.duration}%`;
    const current = [...this.desc.markers].reverse().find((m) => m.t <= now + 0.05);
    if (current !== this.current) {
      this.items.get(this.current)?.removeAttribute("aria-current");
      this.items.get(current)?.setAttribute("aria-current", "true");
      this.current = current;
    }
  }

  // -- a marker's details --------------------------------------------------------------
  select(m, seek) {
    if (seek) this.seek(m.t);
    this.pins.get(this.selected)?.classList.remove("selected");
    this.pins.get(m)?.classList.add("selected");
    this.selected = m;
    for (const url of this.objectUrls.splice(0)) URL.revokeObjectURL(url);
    const d = m.data || {};
    const what = [];
    // A message purged at the end of its retention period (#18) is a stub: no text.
    if (m.type === "chat" && d.purged) what.push(el("p", { class: "detail-text muted", testid: "detail-text", data: { purged: "chat" }, i18n: "replay.chat_purged" }));
    else if (m.type === "chat") what.push(el("p", { class: "detail-text", testid: "detail-text", text: d.text || "" }));
    if (m.type === "opinion") {
      what.push(el("p", { class: "detail-decision", testid: "detail-decision", data: { decision: d.decision }, i18n: `opinion.decision_${d.decision}` }));
      if (d.missing?.length) {
        what.push(el("div", { class: "muted", i18n: "opinion.missing_list" }), el("ul", { class: "missing", testid: "detail-missing" }, d.missing.map((x) => el("li", { text: x }))));
      }
      if (d.refer_to) what.push(el("p", {}, el("span", { class: "muted", i18n: "opinion.refer_to" }), " ", el("span", { dept: d.refer_to })));
      if (d.note) what.push(el("p", { class: "opinion-note", text: d.note }));
    }
    if (m.type === "invitation") {
      const target = d.dept ? el("span", { dept: d.dept }) : el("span", { text: d.reviewer_name || d.reviewer || "" });
      what.push(el("p", {}, el("span", { i18n: `replay.invitation_${d.state}` }), " · ", target));
      if (d.reason) what.push(el("p", {}, el("span", { class: "muted", i18n: "replay.reason" }), " ", el("span", { text: d.reason })));
    }
    if (m.type === "leave" && d.reason) what.push(el("p", { i18n: `replay.left_${d.reason}` }));
    if (m.type === "recording") what.push(el("p", { i18n: `replay.recording_${d.state}` }));
    if (m.type === "snapshot" && d.url) {
      const img = el("img", { class: "detail-still", alt: t("doc.open_still") });
      what.push(img);
      apiObjectUrl(d.url)
        .then((url) => {
          this.objectUrls.push(url);
          img.src = url;
        })
        .catch((err) => console.warn("replay: still not loaded", err.code || err));
    }
    fill(
      this.detail,
      el(
        "div",
        { class: `detail detail-${m.type}`, data: { type: m.type, seq: String(m.seq), t: String(m.t) } },
        el("div", { class: "detail-head" }, el("span", { class: `chip ev-chip ev-${m.type}`, i18n: `replay.type_${m.type}` }), el("span", { class: "ev-time", text: clock(m.t) }), el("time", { ts: m.ts, tsStyle: "seconds" })),
        m.actor ? actorLine(m.actor) : null,
        what,
      ),
    );
  }

  // -- sources -------------------------------------------------------------------------
  sourcesFailed() {
    if (this.refreshing || !this.onSourcesExpired) return;
    this.refreshing = this.onSourcesExpired()
      .then((desc) => this.updateSources(desc))
      .catch((err) => console.warn("replay: sources not renewed", err.code || err))
      .finally(() => setTimeout(() => (this.refreshing = null), 10_000));
  }

  updateSources(desc) {
    const byId = new Map(desc.tracks.map((x) => [x.track_id, x]));
    for (const m of this.media) {
      const fresh = byId.get(m.track.track_id);
      if (!fresh || (fresh.src === m.track.src && !m.el.error)) continue;
      m.track.src = fresh.src;
      m.ready = false;
      m.el.src = fresh.src;
    }
  }

  destroy() {
    clearInterval(this.timer);
    for (const m of this.media) {
      m.el.pause();
      m.el.removeAttribute("src");
      m.el.load();
    }
    for (const url of this.objectUrls.splice(0)) URL.revokeObjectURL(url);
    clear(this.root);
  }
}
