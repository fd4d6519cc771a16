// The camera's resolution follows the bitrate the SFU asks of it (its REMB, which the
// browser's encoder reports as its target). Without simulcast one encoding serves every
// subscriber; after a steep drop (1.7 Mbps -> 200 kbps when a reviewer's link is thin)
// Chrome keeps the full resolution, drops frames (1-3 a second) and lowers it only after
// 4-5 s. Scaling down at once gives moving video at once, its first keyframe small
// enough for the thin link; the full resolution comes back once the target has carried
// it for a few seconds. Screen and document shares keep theirs (text must stay sharp).

// Bits per pixel and frame VP8 needs at a usable quality: Chrome's own scaler settled at
// 480 wide for 575 kbps and at 320 wide for 170 kbps (15 fps).
const BITS_PER_PIXEL = 0.2;
const FULL_BPS = 1_000_000; // at or over this the browser's own choice stands
const STEPS = [1, 4 / 3, 2]; // 640x360 -> 480x270 -> 320x180
const UP_AFTER_MS = 4000; // a larger size only after the target carried it this long...
// ...with room to spare: at 830 kbps Chrome's encoder at 640x360 dropped to 2-5 fps for
// 5 s before its own scaler went back to 480 wide.
const UP_HEADROOM = 0.65;
const TICK_MS = 1000;
const SETTLE_MS = 5000; // a new sender's first seconds: the browser's estimate ramps up

// The scale (scaleResolutionDownBy) for a camera of width x height at fps, sent at
// targetBps; 1 when the browser does not say its target.
export function wantedScale(targetBps, width, height, fps, headroom = 1) {
  if (!targetBps || !width || !height || targetBps >= FULL_BPS) return 1;
  const need = width * height * (fps || 15) * BITS_PER_PIXEL;
  for (const s of STEPS) if (need / (s * s) <= headroom * targetBps) return s;
  return STEPS[STEPS.length - 1];
}

export class SendScale {
  // getSender: the RTCRtpSender of the published camera, or null.
  constructor(getSender) {
    this.getSender = getSender;
    this.scale = 1;
    this.sender = null;
    this.since = 0;
    this.upSince = null;
    this.busy = false;
    this.timer = setInterval(() => this.tick(), TICK_MS);
  }

  async tick() {
    const sender = this.getSender();
    if (!sender?.track || this.busy) return;
    const now = Date.now();
    if (sender !== this.sender) [this.sender, this.since, this.scale, this.upSince] = [sender, now, 1, null];
    if (now - this.since < SETTLE_MS) return;
    this.busy = true;
    try {
      let target = 0;
      (await sender.getStats()).forEach((s) => {
        if (s.type === "outbound-rtp" && s.kind === "video") target = s.targetBitrate || target;
      });
      const { width, height, frameRate } = sender.track.getSettings();
      const down = wantedScale(target, width, height, frameRate);
      const up = wantedScale(target, width, height, frameRate, UP_HEADROOM);
      if (down > this.scale) await this.apply(sender, down);
      else if (up < this.scale) {
        this.upSince ??= now;
        if (now - this.upSince >= UP_AFTER_MS) await this.apply(sender, up);
      } else this.upSince = null;
    } catch (err) {
      console.warn("camera scale:", err.name, err.message); // (the next tick tries again)
    } finally {
      this.busy = false;
    }
  }

  async apply(sender, scale) {
    const params = sender.getParameters();
    if (!params.encodings?.length) return;
    params.encodings[0].scaleResolutionDownBy = scale;
    await sender.setParameters(params);
    [this.scale, this.upSince] = [scale, null];
    document.body.dataset.cameraScale = String(scale);
  }

  stop() {
    clearInterval(this.timer);
  }
}
