// Days as the site counts them: whole UTC days since 1970-01-01, and their `YYYY-MM-DD` text.

export const DAY_MS = 86_400_000;

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

/** The UTC year of a day number (the view files are one per year). */
export function yearOf(day) {
  return new Date(day * DAY_MS).getUTCFullYear();
}
