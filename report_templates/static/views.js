// A report page's data: the yearly view files of a segmentation
// (data/view/<report>/<segmentation>/<year>.json), fetched once each and merged into the view
// of a date range. A file from another build than the page's makes the page reload.
import { dayNumber, dayText, yearOf } from "./days.js";
import { page } from "./state.js";

const blocks = new Map(); // "<segmentation>/<year>" → Promise of that view file

function loadBlock(segmentation, year) {
  const key = `${segmentation}/${year}`;
  if (!blocks.has(key)) {
    const url = `data/view/${encodeURIComponent(page.report)}/${encodeURIComponent(segmentation)}`
      + `/${year}.json?v=${encodeURIComponent(page.build)}`;
    blocks.set(key, fetch(url).then((response) => {
      if (!response.ok) throw new Error(`${url}: HTTP ${response.status}`);
      return response.json();
    }).then((part) => {
      if (part.build !== page.build) newerBuild(part.build); // never draw two builds' data
      return part;
    }).catch((error) => {
      blocks.delete(key); // let a later render try again
      throw error;
    }));
  }
  return blocks.get(key);
}

/**
 * A newer build was published since this page loaded: reload it (keeping the address, so the
 * reader's choices stay) rather than mix two builds' data; once per build, so a site whose
 * files disagree shows an error instead of reloading for ever.
 */
function newerBuild(build) {
  const key = "kpi-reloaded-for";
  if (sessionStorage.getItem(key) !== build) {
    sessionStorage.setItem(key, build);
    window.location.reload();
    const reloading = new Error(`build ${build} was published since this page (build `
      + `${page.build}) loaded: reloading`);
    reloading.reloading = true; // news, not a failure: logged at info level
    throw reloading;
  }
  throw new Error(`this page is from build ${page.build}, its data from build ${build}: reload`);
}

/**
 * The view of days [from, to] of one segmentation: the yearly view files it touches, merged into
 * arrays indexed from `from` (null where there is no row), series in display order.
 */
export async function viewOf(segmentation, from, to) {
  const years = [];
  for (let year = yearOf(from); year <= yearOf(to); year += 1) years.push(year);
  const parts = await Promise.all(years.map((year) => loadBlock(segmentation, year)));
  const length = to - from + 1;
  const columns = page.kind === "count" || page.kind === "median"
    ? ["value"] : ["numerator", "denominator"];
  const byKey = new Map();
  const folded = new Map(); // segment → Set of the day numbers it was folded into Other
  for (const part of parts) {
    const origin = dayNumber(part.first_day);
    const low = Math.max(from, origin);
    const high = Math.min(to, dayNumber(part.last_day));
    for (const { segment, days } of part.folded || []) {
      if (!folded.has(segment)) folded.set(segment, new Set());
      for (const index of days) folded.get(segment).add(origin + index);
    }
    for (const s of part.series) {
      const key = `${s.segment}\u0000${s.measure}`;
      if (!byKey.has(key)) {
        const entry = { segment: s.segment, measure: s.measure };
        for (const column of columns) entry[column] = new Array(length).fill(null);
        byKey.set(key, entry);
      }
      const entry = byKey.get(key);
      for (let day = low; day <= high; day += 1) {
        for (const column of columns) entry[column][day - from] = s[column][day - origin] ?? null;
      }
    }
  }
  const segments = page.segments[segmentation] || [];
  const rank = (s) => [segments.indexOf(s.segment), page.measures.indexOf(s.measure)];
  const series = [...byKey.values()].sort((a, b) => {
    const [a1, a2] = rank(a);
    const [b1, b2] = rank(b);
    return a1 - b1 || a2 - b2;
  });
  return { segmentation, kind: page.kind, first_day: dayText(from), series, folded };
}
