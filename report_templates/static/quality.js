// The data quality page at a glance: one record per day of the chosen range (its counts, a
// refused restatement, its flags) and which days are problem days. Pure functions of the view
// the page loaded; report.js and tables.js show them.
import { formatValue } from "./arithmetic.js";
import { dayNumber, dayText } from "./days.js";

/**
 * One record per day of the view `file` (`length` days) that has data or a refusal, oldest
 * first, from the page config's `measures`, `labels`, `problems`, `problem_share` (a day's bad
 * rows make it a problem day from that share of its rows fetched on) and `refusals`:
 * `{day, counts: {measure: n}, refusal, flags, over, problems}`, where `over` lists the problem
 * measures at `problem_share` or more of the day's fetched rows, and `problems` names, in words,
 * why the day is a problem day (those counts, a refused restatement, a flag on the data quality
 * report); empty for a good day.
 */
export function qualityDays(file, length,
  { measures, labels, problems, problem_share: share, refusals }, flags) {
  const origin = dayNumber(file.first_day);
  const refused = new Map(refusals.map((r) => [r.day, r]));
  const flagged = new Map();
  for (const flag of flags.filter((f) => f.report === "data_quality")) {
    if (!flagged.has(flag.date)) flagged.set(flag.date, []);
    flagged.get(flag.date).push(flag);
  }
  const short = (measure) => (labels[measure] || measure).split(" (")[0].toLowerCase();
  const days = [];
  for (let i = 0; i < length; i += 1) {
    const day = dayText(origin + i);
    const counts = {};
    let present = false;
    for (const measure of measures) {
      const series = file.series.find((s) => s.measure === measure);
      const value = series ? series.value[i] : null;
      counts[measure] = value;
      present = present || value !== null;
    }
    const refusal = refused.get(day) || null;
    if (!present && !refusal) continue;
    const dayFlags = (flagged.get(day) || []).map((flag) => `${labels[flag.measure]
      || flag.measure} flagged ${flag.direction}`);
    const fetched = counts.fetched;
    const over = problems.filter((m) => counts[m] > 0
      && !(fetched > 0 && counts[m] < share * fetched));
    const reasons = over.map(short);
    if (refusal) reasons.push("restatement refused");
    days.push({ day, counts, refusal, flags: dayFlags, over,
      problems: reasons.concat(dayFlags) });
  }
  return days;
}

/**
 * The days as a table, one row per day: `{header, labels, rows, numeric}`; `header` names the
 * columns as in a CSV, `labels` as the page shows them. Every count, the refused
 * restatement's rows and why the day is a problem day; or, `compact`, only the problem counts,
 * the refusal and the flags (the problem days' list). Counts are grouped for reading
 * (`formatted`) or raw for a download.
 */
export function qualityTable(days, { measures, labels, problems }, { formatted = true,
  compact = false } = {}) {
  const count = (value) => (value === null || value === undefined ? ""
    : formatted ? formatValue(value) : String(value));
  const shown = compact ? problems : measures;
  const header = ["date", ...shown, "refused_would_remove", compact ? "flags" : "problems"];
  const names = { date: "Day", refused_would_remove: "Refused restatement (would remove)",
    problems: "Problems", flags: "Flagged", ...labels };
  const rows = days.map((d) => [
    d.day, ...shown.map((m) => count(d.counts[m])),
    d.refusal ? count(d.refusal.would_remove) || "refused" : "",
    (compact ? d.flags : d.problems).join(", "),
  ]);
  const numeric = new Set([...shown, "refused_would_remove"]);
  return { header, labels: names, rows, numeric };
}
