// The video grid: one tile per participant (name, role, department), the active speaker
// highlighted, and the document source shown large when someone shares one.
// Tiles carry data-testid="video-tile", data-participant-id and data-state
// ("waiting" until a frame is shown, then "playing").
import { t } from "/static/i18n.js";
import { el, fill } from "/static/ui.js";

function initials(name) {
  return (name || "?").trim().slice(0, 1).toUpperCase();
}

// data-state follows the frames actually shown, not just an attached track.
function watchFrames(video, holder) {
  const mark = () => {
    if (!video.srcObject) return;
    if (video.requestVideoFrameCallback) {
      video.requestVideoFrameCallback(() => {
        holder.dataset.state = video.srcObject ? "playing" : "waiting";
      });
    } else {
      video.addEventListener("playing", () => (holder.dataset.state = "playing"), { once: true });
    }
  };
  return mark;
}

function play(media, onBlocked) {
  const p = media.play();
  if (p) p.catch((err) => err.name === "NotAllowedError" && onBlocked?.());
}

class Tile {
  constructor(pid, identity, { self = false, onAudioBlocked } = {}) {
    this.pid = pid;
    this.self = self;
    this.video = el("video", { autoplay: true, muted: true, playsInline: true });
    this.audio = el("audio", { autoplay: true });
    this.onAudioBlocked = onAudioBlocked;
    this.avatar = el("div", { class: "tile-avatar", attrs: { "aria-hidden": "true" } });
    this.name = el("strong", { class: "tile-name" });
    this.meta = el("span", { class: "tile-meta" });
    this.status = el("div", { class: "tile-status", hidden: true });
    // The SFU paused this video for us (our link is too thin); the audio goes on.
    this.pausedTag = el("div", { class: "tile-paused", testid: "video-paused", i18n: "session.video_paused", hidden: true });
    this.speakingTag = el("span", { class: "tile-speaking", i18n: "session.speaking", hidden: true });
    this.node = el(
      "figure",
      {
        class: `tile${self ? " tile-self" : ""}`,
        testid: "video-tile",
        data: { participantId: pid, state: "waiting", self: self ? "1" : "0" },
      },
      this.video,
      this.avatar,
      this.status,
      this.pausedTag,
      el("figcaption", { class: "tile-label" }, this.name, this.meta, this.speakingTag),
      this.audio,
    );
    this.frames = watchFrames(this.video, this.node);
    this.setIdentity(identity);
  }

  setIdentity(identity) {
    if (!identity) return;
    this.identity = identity;
    this.node.dataset.role = identity.role;
    this.avatar.textContent = initials(identity.name);
    this.name.textContent = identity.name || identity.sub;
    const meta = [el("span", { i18n: this.self ? "session.you" : `role.${identity.role}` })];
    if (identity.dept) meta.push(el("span", { dept: identity.dept }));
    this.meta.replaceChildren(...meta);
    this.node.setAttribute("aria-label", identity.name || "");
  }

  setVideo(track) {
    const current = this.video.srcObject?.getVideoTracks()[0];
    if (current === track) return;
    if (!track) {
      this.video.srcObject = null;
      this.node.dataset.state = "waiting";
      this.node.classList.add("no-video");
      return;
    }
    this.node.classList.remove("no-video");
    this.node.dataset.state = "waiting";
    this.video.srcObject = new MediaStream([track]);
    track.addEventListener("unmute", () => this.frames());
    play(this.video);
    this.frames();
  }

  setAudio(track) {
    if (this.self) return;
    const current = this.audio.srcObject?.getAudioTracks()[0];
    if (current === track) return;
    this.audio.srcObject = track ? new MediaStream([track]) : null;
    if (track) play(this.audio, this.onAudioBlocked);
  }

  setState(state) {
    this.node.dataset.presence = state;
    const key = { disconnected: "session.tile_reconnecting" }[state];
    this.status.hidden = !key;
    if (key) {
      this.status.dataset.i18n = key;
      this.status.textContent = t(key);
    }
  }

  setPaused(on) {
    this.node.dataset.video = on ? "paused" : "";
    this.pausedTag.hidden = !on;
  }

  setSpeaking(on) {
    this.node.classList.toggle("speaking", on);
    this.speakingTag.hidden = !on;
  }
}

export class VideoGrid {
  constructor(tilesEl, docEl, { onAudioBlocked } = {}) {
    this.tilesEl = tilesEl;
    this.docEl = docEl;
    this.tiles = new Map();
    this.onAudioBlocked = onAudioBlocked;
    this.selfId = null;
    this.localDoc = null;
    this.remoteDoc = null;
    this.docVideo = el("video", { autoplay: true, muted: true, playsInline: true });
    this.docLabel = el("div", { class: "doc-label" });
    this.docPaused = el("div", { class: "tile-paused", i18n: "session.video_paused", hidden: true });
    this.docFrames = watchFrames(this.docVideo, this.docEl);
    this.docEl.append(this.docVideo, this.docLabel, this.docPaused);
  }

  tile(pid, identity, self = false) {
    let tile = this.tiles.get(pid);
    if (!tile) {
      tile = new Tile(pid, identity, { self, onAudioBlocked: this.onAudioBlocked });
      this.tiles.set(pid, tile);
      if (self) this.tilesEl.prepend(tile.node);
      else this.tilesEl.append(tile.node);
      tile.node.classList.add("no-video");
      this.layout();
    } else if (identity) {
      tile.setIdentity(identity);
    }
    return tile;
  }

  setSelf(pid, identity) {
    const moved = this.selfId && this.selfId !== pid;
    if (moved) this.remove(this.selfId);
    this.selfId = pid;
    const tile = this.tile(pid, identity, true);
    // A new slot (the old one lapsed during a long cut): the camera goes on, so does the
    // self-view (it used to stay an avatar).
    if (moved && this.localCamera) tile.setVideo(this.localCamera);
  }

  upsertParticipant(p) {
    if (p.state === "left") {
      this.remove(p.participant_id);
      return;
    }
    this.tile(p.participant_id, p.identity, p.participant_id === this.selfId).setState(p.state);
  }

  remove(pid) {
    const tile = this.tiles.get(pid);
    if (!tile) return;
    tile.setVideo(null);
    tile.setAudio(null);
    tile.node.remove();
    this.tiles.delete(pid);
    this.layout();
  }

  setLocal(source, track) {
    if (source === "camera") this.localCamera = track;
    if (source === "camera" && this.selfId) this.tile(this.selfId).setVideo(track);
    if (source === "document") {
      this.localDoc = track ? { track, owner: this.tiles.get(this.selfId)?.identity } : null;
      this.showDocument();
    }
  }

  // Every remote track now negotiated: [{participant_id, source, kind, owner, track}]
  setRemote(list) {
    const byPid = new Map();
    let doc = null;
    for (const item of list) {
      if (item.source === "document" || item.source === "screen") {
        doc = item;
        continue;
      }
      if (!byPid.has(item.participant_id)) byPid.set(item.participant_id, { owner: item.owner });
      byPid.get(item.participant_id)[item.kind] = item.track;
    }
    for (const [pid, tile] of this.tiles) {
      if (pid === this.selfId) continue;
      const got = byPid.get(pid);
      tile.setVideo(got?.video || null);
      tile.setAudio(got?.audio || null);
    }
    for (const [pid, got] of byPid) {
      if (this.tiles.has(pid)) continue;
      const tile = this.tile(pid, got.owner);
      tile.setVideo(got.video || null);
      tile.setAudio(got.audio || null);
    }
    this.remoteDoc = doc;
    this.showDocument();
  }

  showDocument() {
    const doc = this.remoteDoc || this.localDoc;
    const track = doc?.track || null;
    const current = this.docVideo.srcObject?.getVideoTracks()[0] || null;
    this.docEl.hidden = !track;
    this.tilesEl.parentElement.classList.toggle("has-document", Boolean(track));
    if (current !== track) {
      this.docEl.dataset.state = "waiting";
      this.docVideo.srcObject = track ? new MediaStream([track]) : null;
      if (track) {
        play(this.docVideo);
        this.docFrames();
      }
    }
    this.docEl.dataset.participantId = doc?.participant_id || this.selfId || "";
    const owner = doc?.owner;
    fill(this.docLabel,
      el("span", { i18n: "session.document" }),
      owner ? el("span", { class: "doc-owner", text: owner.name }) : null,
    );
    this.layout();
  }

  // Videos the SFU paused for us: [{pid, source}]; a camera marks its tile, a shared
  // document or screen the document stage.
  videoPaused(list) {
    const cams = new Set(list.filter((p) => p.source === "camera").map((p) => p.pid));
    for (const [pid, tile] of this.tiles) tile.setPaused(cams.has(pid));
    const doc = list.some((p) => p.source !== "camera" && p.pid === this.remoteDoc?.participant_id);
    this.docEl.dataset.video = doc ? "paused" : "";
    this.docPaused.hidden = !doc;
  }

  speaking(pid) {
    for (const [id, tile] of this.tiles) tile.setSpeaking(id === pid && pid !== null);
  }

  layout() {
    this.tilesEl.dataset.count = String(this.tiles.size);
  }

  // Unmute remote audio after a click (when the browser blocked autoplay with sound).
  resumeAudio() {
    for (const tile of this.tiles.values()) if (tile.audio.srcObject) play(tile.audio);
  }
}
