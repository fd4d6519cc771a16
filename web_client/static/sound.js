// An optional soft chime (a new invitation in the inbox; an answer at the counter:
// answers.js), generated with Web Audio, no sound file. Off by default: the hall is silent.
const KEY = "jr.sound";
let ctx = null;

export function soundOn() {
  return localStorage.getItem(KEY) === "on";
}

export function setSound(on) {
  localStorage.setItem(KEY, on ? "on" : "off");
  if (on) unlock();
}

// Web Audio may only start after a user gesture: the switch's click is one.
export function unlock() {
  try {
    ctx = ctx || new AudioContext();
    if (ctx.state === "suspended") ctx.resume().catch(() => {});
  } catch {
    ctx = null;
  }
}

export function chime() {
  if (soundOn()) playChime();
}

// Two soft notes (rising by default); silent until a user gesture has unlocked audio.
// Whether it sounded.
export function playChime(notes = [660, 880]) {
  unlock();
  if (!ctx || ctx.state !== "running") return false;
  const now = ctx.currentTime;
  notes.forEach((freq, i) => {
    const osc = ctx.createOscillator();
    const gain = ctx.createGain();
    osc.type = "sine";
    osc.frequency.value = freq;
    gain.gain.setValueAtTime(0, now + i * 0.18);
    gain.gain.linearRampToValueAtTime(0.06, now + i * 0.18 + 0.03);
    gain.gain.exponentialRampToValueAtTime(0.0001, now + i * 0.18 + 0.5);
    osc.connect(gain).connect(ctx.destination);
    osc.start(now + i * 0.18);
    osc.stop(now + i * 0.18 + 0.55);
  });
  return true;
}
