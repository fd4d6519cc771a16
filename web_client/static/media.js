// The media connection to the SFU: ONE RTCPeerConnection per participant, and the client
// always offers (no glare). It mirrors bench/bot.py:
//   publish   -> addTransceiver(track, {direction: "sendonly"})
//   subscribe -> addTransceiver(kind, {direction: "recvonly"}) per remote track (mid -> track_id)
//   removed   -> that transceiver goes "inactive" (never reused)
//   offer -> setLocalDescription -> ICE gathering complete (<= 1.5 s) -> media.offer
//   -> setRemoteDescription(answer) -> media.ready. One negotiation at a time.

const GATHER_MS = 1500;

function gathered(pc) {
  if (pc.iceGatheringState === "complete") return Promise.resolve();
  return new Promise((resolve) => {
    const done = () => {
      clearTimeout(timer);
      pc.removeEventListener("icegatheringstatechange", check);
      resolve();
    };
    const check = () => pc.iceGatheringState === "complete" && done();
    const timer = setTimeout(done, GATHER_MS);
    pc.addEventListener("icegatheringstatechange", check);
  });
}

export class MediaLink {
  // signal: a Signal; hooks: {onRemotes(list), onState(state), onError(err)}
  constructor(signal, hooks = {}) {
    this.signal = signal;
    this.hooks = hooks;
    this.pc = null;
    this.participantId = null;
    this.iceServers = [];
    this.published = new Map(); // mid -> {source, transceiver}
    this.pending = []; // [{source, track}] to add on the next offer
    this.remotes = new Map(); // track_id -> {info, transceiver, track}
    this.gone = new Set(); // track ids that vanished from media.tracks since we offered
    this.tracks = []; // the session's published tracks (media.tracks)
    this.running = null;
    this.dirty = false;
    this.closed = false;
    this.failures = 0;
  }

  start(participantId, iceServers) {
    this.participantId = participantId;
    this.iceServers = iceServers || [];
    this.closed = false;
    this.createPc();
    return this.negotiate();
  }

  createPc() {
    // "relay": media only through the site's TURN server (welcome.ice_transport_policy).
    const iceTransportPolicy = this.signal.welcome?.ice_transport_policy === "relay" ? "relay" : "all";
    const pc = new RTCPeerConnection({ iceServers: this.iceServers, iceTransportPolicy, bundlePolicy: "max-bundle" });
    this.pc = pc;
    this.gen = (this.gen || 0) + 1;
    pc.addEventListener("connectionstatechange", () => {
      if (this.pc !== pc) return;
      this.hooks.onState?.(pc.connectionState);
      clearTimeout(this.stallTimer);
      if (pc.connectionState === "failed") this.restart();
      // "disconnected" may heal by itself; if it does not, start afresh.
      if (pc.connectionState === "disconnected") {
        this.stallTimer = setTimeout(() => this.pc === pc && pc.connectionState !== "connected" && this.restart(), 6000);
      }
    });
    this.hooks.onState?.(pc.connectionState);
  }

  // What we publish: {source: track}
  localTracks() {
    const out = {};
    for (const { source, transceiver } of this.published.values()) {
      if (transceiver.sender.track) out[source] = transceiver.sender.track;
    }
    for (const { source, track } of this.pending) out[source] = track;
    return out;
  }

  // The sender of a published source (null before its offer went out).
  sender(source) {
    for (const pub of this.published.values()) if (pub.source === source) return pub.transceiver.sender;
    return null;
  }

  publish(source, track) {
    if (source === "document" || source === "screen") track.contentHint = "detail";
    this.pending.push({ source, track });
    return this.negotiate();
  }

  // Swap the track of a published source without renegotiating (another camera).
  async replace(source, track) {
    for (const pub of this.published.values()) {
      if (pub.source === source) return pub.transceiver.sender.replaceTrack(track);
    }
    const queued = this.pending.find((p) => p.source === source);
    if (queued) queued.track = track;
    else return this.publish(source, track);
  }

  unpublish(source) {
    this.pending = this.pending.filter((p) => p.source !== source);
    let changed = false;
    for (const [mid, pub] of this.published) {
      if (pub.source !== source) continue;
      pub.transceiver.direction = "inactive";
      pub.transceiver.sender.replaceTrack(null);
      this.published.delete(mid);
      changed = true;
    }
    return changed ? this.negotiate() : Promise.resolve();
  }

  setTracks(tracks) {
    this.tracks = tracks || [];
    // A track id can come back (its owner reconnected with a fresh connection): the
    // old subscription is dead, so it must be subscribed anew, on a new transceiver.
    const ids = new Set(this.tracks.map((t) => t.track_id));
    for (const id of this.remotes.keys()) if (!ids.has(id)) this.gone.add(id);
    if (this.pc && !this.closed && this.wantedChanges()) this.negotiate();
    else this.emitRemotes();
  }

  wanted() {
    const out = new Map();
    for (const t of this.tracks) if (t.participant_id !== this.participantId) out.set(t.track_id, t);
    return out;
  }

  wantedChanges() {
    if (this.gone.size) return true;
    const wanted = this.wanted();
    if (wanted.size !== this.remotes.size) return true;
    for (const id of wanted.keys()) if (!this.remotes.has(id)) return true;
    return false;
  }

  negotiate() {
    this.dirty = true;
    if (!this.running && this.pc) {
      const gen = this.gen;
      const current = () => gen === this.gen && !this.closed;
      this.running = (async () => {
        try {
          while (this.dirty && current()) {
            this.dirty = false;
            await this.negotiateOnce();
            if (this.wantedChanges()) this.dirty = true;
          }
          this.failures = 0;
        } catch (err) {
          if (current()) this.failed(err);
        } finally {
          if (gen === this.gen) this.running = null;
        }
      })();
    }
    return this.running || Promise.resolve();
  }

  async negotiateOnce() {
    const pc = this.pc;
    if (!pc.getTransceivers().length && !this.pending.length) {
      // Nothing to send yet: learn what there is to receive first.
      const sync = await this.signal.request({ type: "media.sync" });
      this.tracks = sync.tracks || [];
      if (!this.wanted().size) return;
    }
    // A new connection's first offer carries at most one m-line of each kind; the rest
    // follow in the next round at once. (aiortc, the SFU's WebRTC stack, bundles a
    // first offer's m-lines wrongly otherwise: its default "balanced" policy leaves a
    // second video m-line on a transport it then stops, and that track never flows.)
    const first = !pc.remoteDescription;
    const used = new Set();
    const allow = (kind) => !first || (!used.has(kind) && used.add(kind));
    let deferred = false;
    const newPubs = [];
    const later = [];
    for (const { source, track } of this.pending) {
      if (allow(track.kind)) newPubs.push({ source, transceiver: pc.addTransceiver(track, { direction: "sendonly" }) });
      else later.push({ source, track });
    }
    this.pending = later;
    deferred = later.length > 0;
    const wanted = this.wanted();
    const gone = this.gone;
    this.gone = new Set();
    for (const [id, remote] of this.remotes) {
      if (!wanted.has(id) || gone.has(id)) {
        remote.transceiver.direction = "inactive";
        this.remotes.delete(id);
      }
    }
    for (const [id, info] of wanted) {
      if (this.remotes.has(id)) {
        this.remotes.get(id).info = info;
        continue;
      }
      if (!allow(info.kind)) {
        deferred = true;
        continue;
      }
      const transceiver = pc.addTransceiver(info.kind, { direction: "recvonly" });
      this.remotes.set(id, { info, transceiver, track: null });
    }
    await pc.setLocalDescription(await pc.createOffer());
    await gathered(pc);
    for (const pub of newPubs) this.published.set(pub.transceiver.mid, pub);
    const subscribe = [...this.remotes].map(([id, r]) => ({ mid: r.transceiver.mid, track_id: id }));
    const publish = [...this.published].map(([mid, p]) => ({ mid, source: p.source }));
    const reply = await this.signal.request({ type: "media.offer", sdp: pc.localDescription.sdp, publish, subscribe });
    if (this.pc !== pc) return;
    await pc.setRemoteDescription({ type: "answer", sdp: reply.sdp });
    await this.signal.request({ type: "media.ready" });
    for (const remote of this.remotes.values()) remote.track = remote.transceiver.receiver.track;
    this.tracks = reply.tracks || this.tracks;
    this.emitRemotes();
    if (deferred) this.dirty = true;
  }

  // After the socket came back: learn the tracks again and finish what was cut short.
  // Bytes received on every inbound stream, summed: rising means media flows.
  async inboundBytes() {
    const pc = this.pc;
    if (!pc) return 0;
    let bytes = 0;
    (await pc.getStats()).forEach((s) => {
      if (s.type === "inbound-rtp") bytes += s.bytesReceived || 0;
    });
    return bytes;
  }

  // After the socket was lost (a cut, a new address): keep the connection if media
  // flows again within a moment (the same path came back), else rebuild it in the same
  // slot at once rather than waiting for ICE consent to fail (which after an address
  // change takes tens of seconds).
  async healAfterReconnect(waitMs = 1500) {
    const pc = this.pc;
    if (!pc || ["failed", "closed"].includes(pc.connectionState)) return this.restart();
    if (!this.remotes.size) return this.resumeAfterReconnect();
    const before = await this.inboundBytes();
    for (let waited = 0; waited < waitMs; waited += 250) {
      await new Promise((r) => setTimeout(r, 250));
      if (this.pc !== pc) return undefined; // replaced meanwhile
      if ((await this.inboundBytes()) > before) return this.resumeAfterReconnect();
    }
    return this.restart();
  }

  async resumeAfterReconnect() {
    const sync = await this.signal.request({ type: "media.sync" });
    const pending = this.dirty;
    this.setTracks(sync.tracks || []);
    if (pending && !this.running) this.negotiate();
  }

  emitRemotes() {
    const list = [...this.remotes.values()].filter((r) => r.track).map((r) => ({ ...r.info, track: r.track }));
    this.hooks.onRemotes?.(list);
  }

  failed(err) {
    if (err?.code === "disconnected" || err?.code === "timeout") {
      // The socket dropped mid-negotiation: the media path may be fine. Negotiate again
      // once the session is resumed (resumeAfterReconnect), not with a new connection.
      this.dirty = true;
      return;
    }
    this.failures += 1;
    this.hooks.onError?.(err);
    if (this.failures <= 5) {
      clearTimeout(this.retryTimer);
      this.retryTimer = setTimeout(() => this.restart(), Math.min(8000, 500 * 2 ** this.failures));
    }
  }

  // A fresh RTCPeerConnection: after media.state failed, an ICE failure, or a new slot.
  restart(participantId = this.participantId) {
    if (this.closed) return Promise.resolve();
    const keep = this.localTracks();
    this.teardown();
    this.participantId = participantId;
    this.pending = Object.entries(keep).map(([source, track]) => ({ source, track }));
    this.createPc();
    this.emitRemotes();
    return this.negotiate();
  }

  // The server says the media connection failed or closed. That may be about one we
  // already replaced (closing a connection tells the server too): act only when ours is
  // not up either. A lost media worker (or node) is different: our connection still looks
  // up (its ICE consent fails only seconds later) but its far end is gone, so rebuild now;
  // the new offer is placed on a live worker, in the same participant slot.
  serverState(state, reason) {
    if (!["failed", "closed"].includes(state) || !this.pc) return;
    if (["media_worker_lost", "media_node_lost", "media_host_draining"].includes(reason)) {
      this.restart();
      return;
    }
    if (["disconnected", "failed", "closed"].includes(this.pc.connectionState)) this.restart();
  }

  teardown() {
    clearTimeout(this.retryTimer);
    clearTimeout(this.stallTimer);
    this.gone.clear();
    const pc = this.pc;
    this.pc = null;
    this.published.clear();
    this.remotes.clear();
    this.running = null;
    if (pc) pc.close();
  }

  close() {
    this.closed = true;
    this.teardown();
    this.emitRemotes();
  }
}
