// A report page's state: its config (embedded by the build), the reader's choices (date range,
// segmentation, lines or areas, series shown) read from and written to the URL
// (?from=…&to=…&seg=…[&mode=area][&show=…]) so a view can be shared, and what the page shows
// now, which `window.kpi` exposes to tests.
import { dayNumber, dayText } from "./days.js";
import { embedded } from "./dom.js";

export const page = embedded("page-config");
// every report's tab name, value name and units (`{report: {label, percent, value_name}}`)
export const reportNames = embedded("report-names") || {};
export const TOP = 6; // series visible by default when a segmentation has more
const first = dayNumber(page.first_day);
const last = dayNumber(page.last_day);

// What the page shows now; `window.kpi` exposes it (and the drawn views) to tests.
export const kpi = {
  state: null, views: {}, rows: [], funnel: [], flags: [], quality: [], ready: false, renders: 0,
};
window.kpi = kpi;

/** The days of a preset button (`data-preset`: a number of days, or "all"). */
export function presetRange(days) {
  if (days === "all") return { from: first, to: last };
  return { from: Math.max(first, last - Number(days) + 1), to: last };
}

/**
 * A range of day numbers checked against the published days: `{from, to, problem, note}`.
 * A problem refuses the range; a note says it was clipped to the published days.
 */
export function checkRange(from, to, { clip = true } = {}) {
  if (Number.isNaN(from)) return { problem: "Enter a complete, real From date." };
  if (Number.isNaN(to)) return { problem: "Enter a complete, real To date." };
  if (from > to) return { problem: "From must be on or before To." };
  if (to < first || from > last || (!clip && (from < first || to > last))) {
    return { problem: `There is data from ${page.first_day} to ${page.last_day} only.` };
  }
  const clipped = { from: Math.max(from, first), to: Math.min(to, last) };
  const note = clipped.from !== from || clipped.to !== to
    ? `Shown: ${dayText(clipped.from)} to ${dayText(clipped.to)}, the published days in that range.`
    : "";
  return { ...clipped, problem: "", note };
}

/** The state the URL asks for, and notes on what of it was refused or clipped. */
export function readState() {
  const params = new URLSearchParams(window.location.search);
  const notes = [];
  let { from, to } = presetRange(30);
  if (params.has("from") || params.has("to")) {
    const range = checkRange(params.has("from") ? dayNumber(params.get("from")) : from,
      params.has("to") ? dayNumber(params.get("to")) : to);
    if (range.problem) {
      notes.push(`The date range in the address was refused (${range.problem}) `
        + "Showing the last 30 days.");
    } else {
      ({ from, to } = range);
      if (range.note) notes.push(range.note);
    }
  }
  let seg = params.get("seg") || "Total";
  if (!page.segmentations.includes(seg)) {
    notes.push(`This report cannot be segmented by “${seg}”; showing Total.`);
    seg = "Total";
  }
  const mode = page.area_toggle && params.get("mode") === "area" ? "area" : "lines";
  const show = params.getAll("show");
  return { state: { from, to, seg, mode, show: show.length ? show : null }, notes };
}

/** Put the current state in the URL, in place (no history entry per change). */
export function writeUrl() {
  const { from, to, seg, mode, show } = kpi.state;
  const params = new URLSearchParams();
  params.set("from", dayText(from));
  params.set("to", dayText(to));
  params.set("seg", seg);
  if (mode === "area") params.set("mode", "area");
  for (const item of show || []) params.append("show", item);
  window.history.replaceState(null, "", `?${params}`);
}

/** Toggleable items (segments, or measures of a Total step report) in volume or flow order. */
export function itemsOf(segmentation) {
  if (segmentation !== "Total") return page.segments[segmentation] || [];
  return page.layout === "measures" ? page.measures : [];
}

/** The items shown: those the state names, else the first `TOP`. */
export function visibleItems(items) {
  if (!items.length) return [];
  const wanted = kpi.state.show ? items.filter((item) => kpi.state.show.includes(item)) : [];
  return wanted.length ? wanted : items.slice(0, TOP);
}
