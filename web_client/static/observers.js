// Observation (issue #15) on the session page. Everyone in a session sees "监督人员 观看中
// / Supervisor watching" while a supervisor watches it (setting observation = "announced";
// a silent one is never told): the server sends `observation` messages, those watching
// now right after `joined`. A supervisor (or an admin with ?observe) opens the same page
// to watch: `observe` instead of `join`, receive-only media, nothing to send.
import { t } from "/static/i18n.js";

export function observes(me) {
  if (me.role === "supervisor") return true;
  return me.role === "admin" && new URLSearchParams(location.search).has("observe");
}

export class ObserverBanner {
  constructor(node, signal) {
    this.node = node;
    this.watching = new Map(); // observation_id -> observer
    signal.on("observation", (msg) => this.update(msg));
    this.render();
  }

  reset(observations = []) {
    this.watching.clear();
    for (const o of observations) this.watching.set(o.observation_id, o.observer);
    this.render();
  }

  update(msg) {
    const obs = msg.observation;
    if (!obs) return;
    if (msg.state === "started") this.watching.set(obs.observation_id, obs.observer);
    else this.watching.delete(obs.observation_id);
    this.render();
  }

  render() {
    const names = [...this.watching.values()].map((o) => o?.name).filter(Boolean);
    this.node.hidden = this.watching.size === 0;
    this.node.dataset.count = String(this.watching.size);
    this.node.dataset.i18n = "observe.watching";
    this.node.textContent = t("observe.watching");
    this.node.title = names.join(", ");
  }
}
