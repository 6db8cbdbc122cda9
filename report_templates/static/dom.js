// Small DOM helpers every page script shares: an element by id, the JSON a page embeds, and a
// status line. Text only: nothing here writes HTML.

/** The element with `id`, or null. */
export const $ = (id) => document.getElementById(id);

/** The JSON object embedded in the page under `id` (a <script type="application/json">). */
export function embedded(id) {
  const element = document.getElementById(id);
  return element ? JSON.parse(element.textContent) : null;
}

/** Put `text` in the status line `id`, hidden while there is nothing to say. */
export function say(id, text) {
  const element = $(id);
  element.textContent = text;
  element.hidden = !text;
}
