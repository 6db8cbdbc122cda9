// Shared by every page: the page's JSON config, days as numbers, formatting, and drawing a
// Vega-Lite template with named datasets in the light or dark theme.

export const DAY_MS = 86_400_000;

/** The JSON object embedded in the page under `id` (a <script type="application/json">). */
export function embedded(id) {
  const element = document.getElementById(id);
  return element ? JSON.parse(element.textContent) : null;
}

/** Days since 1970-01-01 of a `YYYY-MM-DD` string, or NaN when it is not a real UTC day. */
export function dayNumber(text) {
  if (typeof text !== "string" || !/^\d{4}-\d{2}-\d{2}$/.test(text)) return NaN;
  const ms = Date.parse(`${text}T00:00:00Z`);
  if (Number.isNaN(ms) || dayText(ms / DAY_MS) !== text) return NaN; // e.g. 2026-02-30
  return ms / DAY_MS;
}

/** `YYYY-MM-DD` of a day number. */
export function dayText(number) {
  return new Date(number * DAY_MS).toISOString().slice(0, 10);
}

const counts = new Intl.NumberFormat("en-US", { maximumFractionDigits: 2 });

/** "1 day", "2 days": a count and its noun, in the singular for exactly 1. */
export function plural(count, one, many = `${one}s`) {
  return `${counts.format(count)} ${count === 1 ? one : many}`;
}

/** A value as people read it: a percentage for fractions, grouped digits otherwise. */
export function formatValue(value, percent, digits = 1) {
  if (value === null || value === undefined || Number.isNaN(value)) return "—";
  if (percent) return `${(100 * value).toFixed(digits)}%`;
  return counts.format(value);
}

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

// ---- flagged days (data/anomalies.json) ------------------------------------------------------

const DIRECTIONS = new Set(["low", "high"]);

/** A flag as published, or null when a field is missing or malformed (it is then ignored). */
function checkedFlag(item) {
  if (!item || typeof item !== "object") return null;
  const { date, report, segmentation, segment, measure, value, baseline, direction } = item;
  const texts = [report, segmentation, segment, measure];
  if (Number.isNaN(dayNumber(date)) || texts.some((text) => typeof text !== "string")
    || !Number.isFinite(value) || !Number.isFinite(baseline) || !DIRECTIONS.has(direction)) {
    return null;
  }
  return { date, report, segmentation, segment, measure, value, baseline, direction };
}

/**
 * The days the build flagged as abnormal (`data/anomalies.json`), well-formed ones only.
 * Resolves to [] when the file is missing or unreadable: marks are an extra, never a failure.
 */
export async function loadFlags(build) {
  try {
    const response = await fetch(`data/anomalies.json?v=${encodeURIComponent(build || "")}`);
    if (!response.ok) return [];
    const items = await response.json();
    return Array.isArray(items) ? items.map(checkedFlag).filter(Boolean) : [];
  } catch {
    return [];
  }
}

/**
 * A flag's measure as its report page names it: the `value` of a report by the page's value
 * name (`reports`, the report-names JSON: `{report: {label, percent, value_name}}`), another
 * measure by its label (`labels`: the data quality counts), else as published (step names).
 */
export function measureName(flag, reports = {}, labels = {}) {
  if (flag.measure === "value" && Object.hasOwn(reports, flag.report)) {
    return reports[flag.report].value_name;
  }
  return Object.hasOwn(labels, flag.measure) ? labels[flag.measure] : flag.measure;
}

/**
 * A flag in words, in the chart's units (percent for fractions): "flagged low: value 12 vs
 * baseline 140 (Sign-in attempts, Total)" (`measure`: the measure's name, by default as
 * published), or with `onDay` "flagged low on 2026-10-12: 12 vs baseline 140".
 */
export function flagText(flag, percent, onDay = false, measure = flag.measure) {
  const value = formatValue(flag.value, percent);
  const baseline = formatValue(flag.baseline, percent);
  if (onDay) return `flagged ${flag.direction} on ${flag.date}: ${value} vs baseline ${baseline}`;
  return `flagged ${flag.direction}: value ${value} vs baseline ${baseline} `
    + `(${measure}, ${flag.segment})`;
}
