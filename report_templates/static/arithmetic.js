// The pages' number work, pure (no DOM, no fetch): a series' value on a day (the same
// arithmetic as kpi.reports), counts summed over a range of days and segments, and numbers in
// words. A series is a view file's `{segment, measure, value}` (count, median) or
// `{segment, measure, numerator, denominator}` (ratio, complement), one entry per day, null
// where the day has no row.

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

/** A whole percentage of `numerator` in `denominator` ("42%"), or "—" when it is 0. */
export function percentText(numerator, denominator) {
  return denominator ? `${Math.round((100 * numerator) / denominator)}%` : "—";
}

/** `part` as a fraction of `whole`, or null when `whole` is 0. */
export function share(part, whole) {
  return whole ? part / whole : null;
}

/** An age in hours in words: "less than an hour", "5 h 12 min", "3 days" (from 48 h). */
export function hoursText(hours) {
  if (hours < 1) return "less than an hour";
  if (hours >= 48) return `${Math.floor(hours / 24)} days`;
  const whole = Math.floor(hours);
  const minutes = Math.floor((hours - whole) * 60);
  return `${whole} h${minutes ? ` ${minutes} min` : ""}`;
}

/**
 * `[lowest, highest]` of `values` (`[Infinity, -Infinity]` when there are none), without
 * spreading them into arguments, which fails for very long arrays.
 */
export function extent(values) {
  let lowest = Infinity;
  let highest = -Infinity;
  for (const value of values) {
    lowest = Math.min(lowest, value);
    highest = Math.max(highest, value);
  }
  return [lowest, highest];
}

/** The value of series `s` on day index `i`, or null (the same arithmetic as kpi.reports). */
export function valueAt(kind, s, i) {
  if (kind === "count" || kind === "median") return s.value[i];
  const n = s.numerator[i];
  const d = s.denominator[i];
  if (n === null || d === null || d === 0) return null;
  return kind === "complement" ? 1 - (d - n) / d : n / d;
}

/**
 * The value a chart shows for series `s` on day index `i`: `valueAt`, except that a count is 0
 * for a segment absent on a day that has data (`dayHasData`), unless it was folded into Other
 * that day (`folded`: it had blobs, too few to be named). A day without data stays a gap (null).
 */
export function shownValue(kind, s, i, { dayHasData, folded }) {
  const value = valueAt(kind, s, i);
  if (value === null && kind === "count" && dayHasData && !folded) return 0;
  return value;
}

/** A step's count on a day: the count itself, or the ratio's numerator (count of the step). */
export function countAt(kind, s, i) {
  return (kind === "count" ? s.value[i] : s.numerator[i]) ?? 0;
}

/** Whether series `s` has a report row on day index `i` (a count, or a ratio's denominator). */
export function hasRow(s, i) {
  return (s.value ?? s.denominator)[i] !== null;
}

/** The count of series `s` summed over day indexes `i0` to `i1`; a day without a row adds 0. */
export function rangeCount(kind, s, i0, i1) {
  let sum = 0;
  for (let i = i0; i <= i1; i += 1) sum += countAt(kind, s, i);
  return sum;
}

/**
 * A funnel's counts over day indexes `i0` to `i1`: `{steps, bySegment, totals}`, where
 * `bySegment` maps each segment of `series` (those in `shown`, or all when it is null) to its
 * count per step, in the order of `steps`, and `totals` sums them per step.
 */
export function funnelNumbers(kind, steps, series, shown, i0, i1) {
  const bySegment = new Map();
  for (const s of series) {
    if (shown && !shown.includes(s.segment)) continue;
    if (!bySegment.has(s.segment)) bySegment.set(s.segment, new Array(steps.length).fill(0));
    bySegment.get(s.segment)[steps.indexOf(s.measure)] += rangeCount(kind, s, i0, i1);
  }
  const totals = steps.map((_, j) => [...bySegment.values()].reduce((a, c) => a + c[j], 0));
  return { steps, bySegment, totals };
}

/**
 * The top of a series' band on a stacked chart: the sum of the `value`s of `rows` on `date`
 * whose `rank` is at most `rank` (a null value adds 0).
 */
export function stackedTop(rows, date, rank) {
  return rows.filter((r) => r.date === date && r.rank <= rank)
    .reduce((sum, r) => sum + (r.value ?? 0), 0);
}
