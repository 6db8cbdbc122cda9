// Flagged days (data/anomalies.json): loaded once per page, checked, and put in words, as chart
// marks and as table cells. Every page that shows flags uses these, so they read the same.
import { formatValue, stackedTop } from "./arithmetic.js";
import { DAY_MS, dayNumber } from "./days.js";

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

async function fetchFlags(build) {
  try {
    const response = await fetch(`data/anomalies.json?v=${encodeURIComponent(build || "")}`);
    if (!response.ok) return [];
    const items = await response.json();
    return Array.isArray(items) ? items.map(checkedFlag).filter(Boolean) : [];
  } catch {
    return [];
  }
}

const loaded = new Map(); // build → Promise of its flags: fetched once per page load

/**
 * The days the build flagged as abnormal (`data/anomalies.json`), well-formed ones only.
 * Resolves to [] when the file is missing or unreadable: marks are an extra, never a failure.
 */
export function loadFlags(build) {
  if (!loaded.has(build)) loaded.set(build, fetchFlags(build));
  return loaded.get(build);
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

/**
 * The `flags` dataset of a chart of `report` drawn from `rows` (by `segmentation`): one symbol
 * per flag of that report and segmentation on a drawn day and series, placed at the flagged
 * value (on `stacked` areas, at the top of its series' band, where its value ends), with its
 * text, in `percent` or not, as the tooltip (`reports`, `labels`: see `measureName`).
 */
export function flagMarks(flags, rows, { report, segmentation, percent, stacked = false,
  reports = {}, labels = {} }) {
  const mine = flags.filter((f) => f.report === report && f.segmentation === segmentation);
  if (!mine.length || !rows.length) return [];
  const drawn = new Map(); // "<day ms>|<segment>|<measure>" → the drawn row
  for (const row of rows) {
    const segment = segmentation === "Total" ? "Total" : row.series;
    drawn.set(`${row.date}|${segment}|${row.measure}`, row);
  }
  const result = [];
  for (const flag of mine) {
    const date = dayNumber(flag.date) * DAY_MS;
    const row = drawn.get(`${date}|${flag.segment}|${flag.measure}`);
    if (!row) continue;
    const value = stacked ? stackedTop(rows, date, row.rank) : flag.value;
    result.push({ date, value, direction: flag.direction, series: row.series,
      text: flagText(flag, percent, false, measureName(flag, reports, labels)) });
  }
  return result;
}

/** The flags of a chart in words, for its description ("" when there are none). */
export function describeFlags(marks) {
  return marks.length ? ` ${marks.length} flagged: ${marks.map((f) => f.text).join("; ")}.` : "";
}

export const FLAG_COLUMNS = ["date", "report", "segmentation", "segment", "measure", "value",
  "baseline", "direction"];
export const FLAG_LABELS = { date: "Day", report: "Report", segmentation: "Segmentation",
  segment: "Segment", measure: "Measure", value: "Value", baseline: "Baseline",
  direction: "Direction" };

/** A flag's cells (`FLAG_COLUMNS`) as its report's page shows them: the tab name, the
 * measure's name, values in the report's units (percent for rates) with grouped digits. */
export function flagCells(flag, reports = {}, labels = {}) {
  const report = Object.hasOwn(reports, flag.report) ? reports[flag.report] : null;
  const percent = Boolean(report && report.percent);
  const cells = {
    ...flag,
    report: report ? report.label : flag.report,
    measure: measureName(flag, reports, labels),
    value: formatValue(flag.value, percent),
    baseline: formatValue(flag.baseline, percent),
  };
  return FLAG_COLUMNS.map((name) => String(cells[name]));
}
