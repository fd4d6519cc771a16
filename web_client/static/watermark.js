// The viewer's mark over every replayed tile: name, department and the time, faint but
// legible, repeated diagonally, so a screenshot or a filmed screen names who was
// watching. The server says who (the replay description's `viewer`) and when (its
// clock: the time runs on from the server's, not from the browser's, which may be set
// wrong). Hidden from assistive technology (aria-hidden), transparent to the pointer.
// One layer per tile (`.replay-tile`), added as tiles appear; styles in watermark.css.
const TILE = ".replay-tile";
const COPIES = 30; // copies of the text per tile: enough to cover a large tile diagonally

const pad = (n) => String(n).padStart(2, "0");

export function markText(viewer, date) {
  const day = `${date.getFullYear()}-${pad(date.getMonth() + 1)}-${pad(date.getDate())}`;
  const time = `${pad(date.getHours())}:${pad(date.getMinutes())}:${pad(date.getSeconds())}`;
  return [viewer.name, viewer.dept_name || viewer.dept, `${day} ${time}`].filter(Boolean).join(" · ");
}

// Marks every tile under `root` (now and later) for `viewer`; returns a function that stops.
export function watermark(root, viewer) {
  if (!viewer) return () => {};
  const skew = viewer.at * 1000 - Date.now();
  const texts = [];
  let current = markText(viewer, new Date(Date.now() + skew));
  const mark = (tile) => {
    if (tile.querySelector(":scope > .watermark")) return;
    const field = document.createElement("div");
    field.className = "watermark-field";
    for (let i = 0; i < COPIES; i++) {
      const span = document.createElement("span");
      span.className = "watermark-text";
      const text = document.createTextNode(current);
      span.append(text);
      field.append(span);
      texts.push(text);
    }
    const layer = document.createElement("div");
    layer.className = "watermark";
    layer.dataset.testid = "watermark";
    layer.setAttribute("aria-hidden", "true");
    layer.append(field);
    tile.append(layer);
  };
  const markAll = () => root.querySelectorAll(TILE).forEach(mark);
  markAll();
  // Tiles built later (another layout, a renewed description) are marked as they come.
  const observer = new MutationObserver(markAll);
  observer.observe(root, { childList: true, subtree: true });
  const timer = setInterval(() => {
    if (!root.isConnected) return stop();
    current = markText(viewer, new Date(Date.now() + skew));
    for (const text of texts) if (text.data !== current) text.data = current; // no childList change
  }, 1000);
  function stop() {
    clearInterval(timer);
    observer.disconnect();
    for (const layer of root.querySelectorAll(".watermark")) layer.remove();
  }
  return stop;
}
