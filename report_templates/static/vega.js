// Drawing a Vega-Lite template that reads named datasets into an element, in the light or dark
// theme, with a day axis labelled for its range (the Vega bundle sets `window.vegaEmbed`).
import { DAY_MS } from "./days.js";

/** Whether the reader's browser asks for a dark colour scheme. */
export function prefersDark() {
  return window.matchMedia && window.matchMedia("(prefers-color-scheme: dark)").matches;
}

/** Redraw-on-theme-change: calls `redraw` when the colour scheme flips. */
export function onThemeChange(redraw) {
  if (!window.matchMedia) return;
  window.matchMedia("(prefers-color-scheme: dark)").addEventListener("change", redraw);
}

const drawn = new WeakMap(); // element → its vega-embed result, finalized before a redraw

/** Finalize the Vega view drawn in `element` (its listeners and timers), if any. */
export function release(element) {
  const result = drawn.get(element);
  if (result) {
    result.finalize();
    drawn.delete(element);
  }
}

const LABEL_SPACE = { short: 36, long: 60 }; // px per x-axis label (day over month[, year])

/**
 * Set the day axis of `spec` (its first layer's `x`) to one label per day, or per every k days
 * when the days do not fit `element`'s width: labels never touch and never repeat a day.
 */
function dayAxis(spec, element, [from, to]) {
  const axis = (spec.layer || [spec])[0].encoding?.x?.axis;
  if (!axis) return;
  const long = to - from > 180; // months of several years: say the year
  const plot = Math.max(100, element.clientWidth - 80); // less the value axis and its title
  const perDay = plot / Math.max(1, to - from);
  const step = Math.max(1, Math.ceil(LABEL_SPACE[long ? "long" : "short"] / perDay));
  axis.values = [];
  for (let day = from; day <= to; day += step) axis.values.push(day * DAY_MS);
  axis.labelExpr = `[utcFormat(datum.value, '%d'), utcFormat(datum.value, '${long ? "%b %Y" : "%b"}')]`;
  // every layer on the day scale says the same, or Vega-Lite's merged axis may drop `values`
  for (const layer of spec.layer || []) {
    if (layer.encoding?.x && layer.encoding.x.axis === undefined) layer.encoding.x.axis = axis;
  }
}

/**
 * Draw `template` (a Vega-Lite spec that reads named datasets) into `element` with `datasets`.
 * Resolves to the Vega view; a failure is shown in the element, in words. `options.days`
 * (`[from, to]`, day numbers) labels the day axis for that range.
 */
export async function draw(element, template, datasets, themes, options = {}) {
  const spec = structuredClone(template);
  spec.datasets = datasets;
  spec.config = { ...(spec.config || {}), ...themes[prefersDark() ? "dark" : "light"] };
  if (options.description) spec.description = options.description;
  if (options.days) dayAxis(spec, element, options.days);
  if (options.noPoints) {
    for (const layer of spec.layer || [spec]) {
      if (layer.mark && layer.mark.point) layer.mark.point = false;
    }
  }
  if (spec.layer) { // annotation layers without rows are left out
    spec.layer = spec.layer.filter((layer) => !(layer.data
      && ["milestones", "flags", "folded"].includes(layer.data.name)
      && !(datasets[layer.data.name] || []).length));
  }
  release(element);
  try {
    const result = await window.vegaEmbed(element, spec, {
      mode: "vega-lite",
      renderer: options.renderer || "svg",
      actions: options.actions === false ? false
        : { export: true, source: false, compiled: false, editor: false },
      tooltip: { theme: prefersDark() ? "dark" : "light" },
    });
    drawn.set(element, result);
    element.classList.remove("error");
    return result.view;
  } catch (error) {
    element.textContent = `The chart could not be drawn: ${error}`;
    element.classList.add("error");
    console.error(error);
    return null;
  }
}
