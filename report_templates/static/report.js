// A report page: date range, segmentation, series toggles, charts, funnel table and data table,
// all computed here from the page's view files (data/view/<report>/<segmentation>/<year>.json).
// The state lives in the URL (?from=…&to=…&seg=…[&mode=area][&show=…]) so a view can be shared.
import {
  DAY_MS, dayNumber, dayText, draw, embedded, flagText, formatValue, loadFlags, measureName,
  onThemeChange, plural, release,
} from "./common.js";
import { qualityDays, qualityTable } from "./quality.js";

const page = embedded("page-config");
// every report's tab name, value name and units (`{report: {label, percent, value_name}}`)
const reportNames = embedded("report-names") || {};
const $ = (id) => document.getElementById(id);
const TOP = 6; // series visible by default when a segmentation has more
const CANVAS_ABOVE = 2500; // points; beyond this the charts draw on a canvas
const first = dayNumber(page.first_day);
const last = dayNumber(page.last_day);
const blocks = new Map(); // "<segmentation>/<year>" → Promise of that view file

// What the page shows now; `window.kpi` exposes it (and the drawn views) to tests.
const kpi = {
  state: null, views: {}, rows: [], funnel: [], flags: [], quality: [], ready: false, renders: 0,
};
window.kpi = kpi;

const yearOf = (day) => new Date(day * DAY_MS).getUTCFullYear();

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
async function viewOf(segmentation, from, to) {
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

// ---- state and URL --------------------------------------------------------------------------

function presetRange(days) {
  if (days === "all") return { from: first, to: last };
  return { from: Math.max(first, last - Number(days) + 1), to: last };
}

/**
 * A range of day numbers checked against the published days: `{from, to, problem, note}`.
 * A problem refuses the range; a note says it was clipped to the published days.
 */
function checkRange(from, to, { clip = true } = {}) {
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

function readState() {
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

function writeUrl() {
  const { from, to, seg, mode, show } = kpi.state;
  const params = new URLSearchParams();
  params.set("from", dayText(from));
  params.set("to", dayText(to));
  params.set("seg", seg);
  if (mode === "area") params.set("mode", "area");
  for (const item of show || []) params.append("show", item);
  window.history.replaceState(null, "", `?${params}`);
}

// ---- numbers --------------------------------------------------------------------------------

/** The value of series `s` on day index `i` (the same arithmetic as kpi.reports). */
function valueAt(kind, s, i) {
  if (kind === "count" || kind === "median") return s.value[i];
  const n = s.numerator[i];
  const d = s.denominator[i];
  if (n === null || d === null || d === 0) return null;
  return kind === "complement" ? 1 - (d - n) / d : n / d;
}

/** A step's count on a day: the count itself, or the ratio's numerator (count of the step). */
function countAt(kind, s, i) {
  return (kind === "count" ? s.value[i] : s.numerator[i]) ?? 0;
}

function hasRow(s, i) {
  return (s.value ?? s.denominator)[i] !== null;
}

// ---- the series a view offers ---------------------------------------------------------------

/** Toggleable items (segments, or measures of a Total step report) in volume or flow order. */
function itemsOf(segmentation) {
  if (segmentation !== "Total") return page.segments[segmentation] || [];
  return page.layout === "measures" ? page.measures : [];
}

function visibleItems(items) {
  if (!items.length) return [];
  const wanted = kpi.state.show ? items.filter((item) => kpi.state.show.includes(item)) : [];
  return wanted.length ? wanted : items.slice(0, TOP);
}

function colourOf(items, item) {
  const index = Math.max(0, items.indexOf(item));
  return page.palette[index % page.palette.length];
}

function seriesLabel(file, s) {
  if (file.segmentation !== "Total") return s.segment;
  return page.layout === "series" ? "Total" : labelOf(s.measure);
}

/** A measure as the page names it (the data quality counts have labels; steps are names). */
function labelOf(measure) {
  return page.labels[measure] || measure;
}

// ---- drawing --------------------------------------------------------------------------------

function timeRows(file, series, items, i0, i1, present) {
  const rows = [];
  const origin = dayNumber(file.first_day);
  for (const s of series) {
    const item = file.segmentation === "Total" ? s.measure : s.segment;
    const rank = Math.max(0, items.indexOf(item));
    const color = items.length ? colourOf(items, item) : page.palette[0];
    const foldedDays = file.segmentation === "Total" ? null : file.folded.get(s.segment);
    for (let i = i0; i <= i1; i += 1) {
      let value = valueAt(file.kind, s, i);
      // A count is 0 for a segment absent on a day that has data, unless it was folded into
      // Other that day (it had blobs, too few to be named); a day without data is a gap.
      const folded = Boolean(foldedDays && foldedDays.has(origin + i));
      if (value === null && file.kind === "count" && present[i] && !folded) value = 0;
      rows.push({
        date: (origin + i) * DAY_MS,
        series: seriesLabel(file, s),
        measure: s.measure,
        color,
        rank,
        value,
        numerator: s.numerator ? s.numerator[i] : null,
        denominator: s.denominator ? s.denominator[i] : null,
        folded,
      });
    }
  }
  return rows;
}

function milestonesIn(from, to) {
  return (page.milestones || [])
    .map(([milestone, day]) => ({ milestone, day: dayNumber(day) }))
    .filter((m) => m.day >= from && m.day <= to)
    .map((m) => ({ milestone: m.milestone, date: m.day * DAY_MS }));
}

// ---- segments folded into Other --------------------------------------------------------------

/**
 * The `folded` dataset of a chart drawn from `rows`: one mark per day on which drawn series were
 * folded into Other (a gap in their lines), its tooltip saying which and why.
 */
function foldedMarks(rows) {
  const byDay = new Map();
  for (const row of rows) {
    if (!row.folded) continue;
    if (!byDay.has(row.date)) byDay.set(row.date, []);
    byDay.get(row.date).push(row.series);
  }
  const threshold = page.min_segment_count;
  return [...byDay].map(([date, names]) => ({
    date,
    text: `${dayText(date / DAY_MS)}: ${names.join(", ")} folded into Other (fewer than `
      + `${plural(threshold, "blob")} that day, below the privacy threshold), so no value `
      + `is shown`,
  }));
}

function describeFolded(marks) {
  return marks.length ? ` ${plural(marks.length, "day")} with a segment folded into Other `
    + "below the privacy threshold (a gap)." : "";
}

// ---- flagged days ---------------------------------------------------------------------------

let allFlags = null; // Promise of every well-formed flag of the build (data/anomalies.json)
const flagsOnce = () => { allFlags = allFlags || loadFlags(page.build); return allFlags; };

/**
 * The `flags` dataset of a chart drawn from `rows`: one symbol per flag of this report, of the
 * shown segmentation, on a drawn day and series, placed at the flagged value (on stacked areas,
 * at the top of its series' band, where its value ends), with its text as the tooltip.
 */
async function flagRows(rows, stacked = false) {
  const flags = (await flagsOnce()).filter((f) => f.report === page.report
    && f.segmentation === kpi.state.seg);
  if (!flags.length || !rows.length) return [];
  const drawn = new Map(); // "<day ms>|<segment>|<measure>" → the drawn row
  for (const row of rows) {
    const segment = kpi.state.seg === "Total" ? "Total" : row.series;
    drawn.set(`${row.date}|${segment}|${row.measure}`, row);
  }
  const result = [];
  for (const flag of flags) {
    const date = dayNumber(flag.date) * DAY_MS;
    const row = drawn.get(`${date}|${flag.segment}|${flag.measure}`);
    if (!row) continue;
    let value = flag.value;
    if (stacked) { // the band's top: the sum of this day's series stacked up to this one
      value = rows.filter((r) => r.date === date && r.rank <= row.rank)
        .reduce((sum, r) => sum + (r.value ?? 0), 0);
    }
    result.push({ date, value, direction: flag.direction, series: row.series,
      text: flagText(flag, page.percent, false, measureName(flag, reportNames, page.labels)) });
  }
  return result;
}

function describeFlags(flags) {
  return flags.length ? ` ${flags.length} flagged: ${flags.map((f) => f.text).join("; ")}.` : "";
}

function describe(file, rows, from, to) {
  const scope = file.segmentation === "Total" ? "Total" : `by ${file.segmentation}`;
  const range = `${dayText(from)} to ${dayText(to)} (UTC)`;
  const names = [...new Set(rows.map((r) => r.series))];
  const valued = rows.filter((r) => r.value !== null);
  if (!valued.length) return `${page.title}, ${range}, ${scope}: no values.`;
  if (names.length === 1) {
    const latest = valued[valued.length - 1];
    const values = valued.map((r) => r.value);
    return `${page.title}, ${range}, ${scope}: ${plural(valued.length, "day")} with a value; latest `
      + `${formatValue(latest.value, page.percent)} on ${dayText(latest.date / DAY_MS)}; lowest `
      + `${formatValue(Math.min(...values), page.percent)}, highest `
      + `${formatValue(Math.max(...values), page.percent)}.`;
  }
  return `${page.title}, ${range}, ${scope}: ${names.length} series (${names.join(", ")}), `
    + `${plural(valued.length, "value")}.`;
}

async function drawSeries(file, shown, items, i0, i1, present) {
  // Problem counts (duplicates, skips, rejections) get their own chart and scale: under lines
  // near thousands they would lie flat on the zero line.
  const series = shown.filter((s) => !page.problems.includes(s.measure));
  const rows = timeRows(file, series, items, i0, i1, present);
  kpi.rows = rows;
  const template = kpi.state.mode === "area" ? page.specs.areas : page.specs.lines;
  const flags = await flagRows(rows, kpi.state.mode === "area");
  kpi.flags = flags;
  const folded = foldedMarks(rows);
  const description = describe(file, rows, dayNumber(file.first_day) + i0,
    dayNumber(file.first_day) + i1) + describeFlags(flags) + describeFolded(folded);
  $("chart-caption").textContent = description;
  kpi.views.main = await draw($("chart"), template, {
    rows, milestones: milestonesIn(kpi.state.from, kpi.state.to), flags, folded,
  }, page.themes, {
    description,
    days: [dayNumber(file.first_day) + i0, dayNumber(file.first_day) + i1],
    renderer: rows.length > CANVAS_ABOVE ? "canvas" : "svg",
    noPoints: rows.length > CANVAS_ABOVE,
  });
  if (page.problems.length) {
    await drawProblems(file, shown.filter((s) => page.problems.includes(s.measure)), items, i0,
      i1, present);
  }
}

async function drawProblems(file, series, items, i0, i1, present) {
  const rows = timeRows(file, series, items, i0, i1, present);
  kpi.rows = kpi.rows.concat(rows);
  $("problem-figure").hidden = !rows.length;
  const description = rows.length ? describe(file, rows, dayNumber(file.first_day) + i0,
    dayNumber(file.first_day) + i1).replace(page.title, "Problem rows") : "";
  $("problem-caption").textContent = description;
  if (!rows.length) return;
  kpi.views.problems = await draw($("problem-chart"), page.specs.problems, {
    rows, milestones: milestonesIn(kpi.state.from, kpi.state.to), flags: [],
  }, page.themes, {
    description, renderer: rows.length > CANVAS_ABOVE ? "canvas" : "svg",
    // the main chart's day labels (same days, same width): a day sits under the same label
    days: [dayNumber(file.first_day) + i0, dayNumber(file.first_day) + i1],
  });
}

function funnelNumbers(file, series, items, i0, i1) {
  const steps = page.measures;
  const shown = items.length ? visibleItems(items) : null;
  const bySegment = new Map();
  for (const s of series) {
    if (shown && !shown.includes(s.segment)) continue;
    if (!bySegment.has(s.segment)) bySegment.set(s.segment, new Array(steps.length).fill(0));
    const step = steps.indexOf(s.measure);
    let sum = 0;
    for (let i = i0; i <= i1; i += 1) sum += countAt(file.kind, s, i);
    bySegment.get(s.segment)[step] += sum;
  }
  const totals = steps.map((_, j) => [...bySegment.values()].reduce((a, c) => a + c[j], 0));
  return { steps, bySegment, totals };
}

function percentCell(numerator, denominator) {
  return denominator ? `${Math.round((100 * numerator) / denominator)}%` : "—";
}

function fillFunnelTable({ steps, totals }) {
  const body = $("funnel-table").querySelector("tbody");
  body.replaceChildren();
  const lastStep = steps.length - 1;
  steps.forEach((step, j) => {
    const cells = [
      step,
      formatValue(totals[j], false),
      percentCell(totals[j], totals[0]),
      j === lastStep ? "—" : percentCell(totals[j + 1], totals[j]),
      percentCell(totals[lastStep], totals[j]),
    ];
    const tr = document.createElement("tr");
    cells.forEach((text, k) => {
      const cell = document.createElement(k === 0 ? "th" : "td");
      if (k === 0) cell.scope = "row";
      else cell.className = "num";
      cell.textContent = text;
      tr.append(cell);
    });
    body.append(tr);
  });
}

async function drawFunnel(file, series, items, i0, i1, present) {
  const numbers = funnelNumbers(file, series, items, i0, i1);
  fillFunnelTable(numbers);
  const funnel = [];
  const segments = [...numbers.bySegment.keys()];
  for (const segment of segments) {
    const color = items.length ? colourOf(items, segment) : page.palette[0];
    numbers.steps.forEach((step, j) => {
      funnel.push({
        step,
        label: step.replace(/^\d+\s*-\s*/, ""),
        order: j,
        series: segment,
        color,
        rank: items.length ? items.indexOf(segment) : 0,
        count: numbers.bySegment.get(segment)[j],
        share: numbers.totals[0] ? numbers.bySegment.get(segment)[j] / numbers.totals[0] : null,
      });
    });
  }
  kpi.funnel = funnel;
  const from = dayNumber(file.first_day) + i0;
  const to = dayNumber(file.first_day) + i1;
  const funnelText = `${page.title} funnel, ${dayText(from)} to ${dayText(to)} (UTC): `
    + numbers.steps.map((step, j) => `${step}: ${formatValue(numbers.totals[j], false)}`)
      .join("; ") + ".";
  $("funnel-caption").textContent = funnelText;
  const drawn = [draw($("funnel"), page.specs.funnel, { funnel }, page.themes,
    { description: funnelText })];

  // Small multiples: one panel per step, so steps with equal counts never hide each other.
  const panels = $("panels");
  for (const box of panels.querySelectorAll(".chart")) release(box);
  panels.replaceChildren();
  const rows = timeRows(file, series.filter((s) => !items.length
    || visibleItems(items).includes(s.segment)), items, i0, i1, present);
  kpi.rows = rows;
  const perPanel = rows.length / numbers.steps.length;
  kpi.flags = [];
  for (const step of numbers.steps) {
    const figure = document.createElement("figure");
    figure.className = "panel";
    const heading = document.createElement("h3");
    heading.textContent = step;
    const box = document.createElement("div");
    box.className = "chart small";
    const caption = document.createElement("figcaption");
    const stepRows = rows.filter((r) => r.measure === step);
    const flags = await flagRows(stepRows);
    kpi.flags.push(...flags);
    const folded = foldedMarks(stepRows);
    caption.textContent = describe(file, stepRows, from, to).replace(page.title, step)
      + describeFlags(flags) + describeFolded(folded);
    caption.className = "visually-hidden";
    figure.append(heading, box, caption);
    panels.append(figure);
    drawn.push(draw(box, page.specs.panel, {
      rows: stepRows, milestones: milestonesIn(kpi.state.from, kpi.state.to), flags, folded,
    }, page.themes, {
      description: caption.textContent, renderer: perPanel > CANVAS_ABOVE ? "canvas" : "svg",
      days: [from, to],
    }).then((view) => { kpi.views[step] = view; }));
  }
  const views = await Promise.all(drawn);
  kpi.views.main = views[0];
}

// ---- the data table and the download --------------------------------------------------------

const NUMERIC = new Set(["value", "numerator", "denominator"]);

/**
 * The rows of the current view as a table: one per day and series that has a report row (on
 * the data quality page, one per day with every count); `formatted` groups the digits of a
 * data quality count for reading.
 */
function tableRows(formatted = false) {
  if (page.problems.length) return qualityTable(kpi.quality, page, { formatted });
  const ratio = kpi.rows.some((r) => r.denominator !== null);
  const withStep = new Set(kpi.rows.map((r) => r.measure)).size > 1
    && kpi.rows.some((r) => r.series !== r.measure);
  const rows = kpi.rows.filter((r) => r.value !== null || r.denominator !== null)
    .map((r) => [dayText(r.date / DAY_MS), r.series, ...(withStep ? [r.measure] : []),
      r.value === null ? "" : String(r.value),
      ...(ratio ? [r.numerator ?? "", r.denominator ?? ""] : [])]);
  rows.sort((a, b) => (a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : 0));
  const header = ["date", "series", ...(withStep ? ["step"] : []), "value",
    ...(ratio ? ["numerator", "denominator"] : [])];
  return { header, rows, labels: {}, numeric: NUMERIC };
}

/** A table of `rows` under `header`, its cells as text; `numeric(name)` right-aligns a column. */
function dataTable(className, captionText, header, rows, numeric, labels = {}) {
  const table = document.createElement("table");
  table.className = className;
  const caption = document.createElement("caption");
  caption.textContent = captionText;
  const head = document.createElement("tr");
  for (const name of header) {
    const th = document.createElement("th");
    th.scope = "col";
    th.textContent = labels[name] || name;
    head.append(th);
  }
  const thead = document.createElement("thead");
  thead.append(head);
  const tbody = document.createElement("tbody");
  for (const row of rows) {
    const tr = document.createElement("tr");
    row.forEach((cell, k) => {
      const td = document.createElement("td");
      if (numeric(header[k])) td.className = "num";
      td.textContent = cell;
      tr.append(td);
    });
    tbody.append(tr);
  }
  table.append(caption, thead, tbody);
  return table;
}

function fillDataTable() {
  const details = $("data-table");
  if (!details.open) return;
  const { header, rows, labels, numeric } = tableRows(true);
  const table = dataTable(page.problems.length ? "data quality" : "data", `${plural(rows.length, "row")}, ${dayText(kpi.state.from)} to ${dayText(kpi.state.to)}`,
    header, rows, (name) => numeric.has(name), labels);
  details.querySelector(".table-wrap").replaceChildren(table);
}

function csvCell(value) {
  const text = String(value);
  return /[",\n]/.test(text) ? `"${text.replaceAll('"', '""')}"` : text;
}

function downloadView() {
  const { header, rows } = tableRows();
  const text = [header, ...rows].map((row) => row.map(csvCell).join(",")).join("\n") + "\n";
  const link = document.createElement("a");
  link.href = URL.createObjectURL(new Blob([text], { type: "text/csv" }));
  const { from, to, seg } = kpi.state;
  link.download = `${page.report}_${seg}_${dayText(from)}_${dayText(to)}.csv`;
  document.body.append(link);
  link.click();
  link.remove();
  setTimeout(() => URL.revokeObjectURL(link.href), 1000);
}

// ---- the list of flagged days (data quality page) -------------------------------------------

const FLAG_COLUMNS = ["date", "report", "segmentation", "segment", "measure", "value", "baseline",
  "direction"];
const FLAG_LABELS = { date: "Day", report: "Report", segmentation: "Segmentation",
  segment: "Segment", measure: "Measure", value: "Value", baseline: "Baseline",
  direction: "Direction" };
let flagListFilled = false;

/** A flag's cells as its report's page shows them: the tab name, the measure's name, values
 * in the report's units (percent for rates) with grouped digits. */
function flagCells(flag) {
  const report = Object.hasOwn(reportNames, flag.report) ? reportNames[flag.report] : null;
  const percent = Boolean(report && report.percent);
  const cells = {
    ...flag,
    report: report ? report.label : flag.report,
    measure: measureName(flag, reportNames, page.labels),
    value: formatValue(flag.value, percent),
    baseline: formatValue(flag.baseline, percent),
  };
  return FLAG_COLUMNS.map((name) => String(cells[name]));
}

/** Every flag of the build, as a table (or "No day flagged."), once per page load. */
async function fillFlagList() {
  const box = $("flag-list");
  if (!box || flagListFilled) return;
  flagListFilled = true;
  const flags = await flagsOnce();
  if (!flags.length) {
    const none = document.createElement("p");
    none.className = "empty";
    none.textContent = "No day flagged.";
    box.replaceChildren(none);
    return;
  }
  const days = new Set(flags.map((flag) => flag.date)).size; // many flags can share a day
  const table = dataTable("data flags",
    `${plural(flags.length, "flag")} on ${plural(days, "day")}`, FLAG_COLUMNS,
    flags.map(flagCells), (name) => name === "value" || name === "baseline", FLAG_LABELS);
  const wrap = document.createElement("div");
  wrap.className = "table-wrap";
  wrap.append(table);
  box.replaceChildren(wrap);
}

// ---- problem days (data quality page) ------------------------------------------------------

/** The problem days of the chosen range, newest first, as a table (or says there are none). */
function fillProblemDays() {
  const box = $("problem-days");
  if (!box) return;
  const days = kpi.quality.filter((d) => d.problems.length).reverse();
  const range = `${dayText(kpi.state.from)} to ${dayText(kpi.state.to)}`;
  if (!days.length) {
    const none = document.createElement("p");
    none.textContent = `No problem day from ${range}.`;
    box.replaceChildren(none);
    return;
  }
  const { header, rows, labels, numeric } = qualityTable(days, page, { compact: true });
  const table = dataTable("data quality problem-days",
    `${days.length} problem ${days.length === 1 ? "day" : "days"} from ${range}, newest first`,
    header, rows, (name) => numeric.has(name), labels);
  for (const [k, name] of header.entries()) { // the counts that make the day a problem stand out
    if (!page.problems.includes(name)) continue;
    for (const [r, tr] of [...table.tBodies[0].rows].entries()) {
      if (days[r].over.includes(name)) tr.cells[k].classList.add("problem");
    }
  }
  const wrap = document.createElement("div");
  wrap.className = "table-wrap";
  wrap.append(table);
  box.replaceChildren(wrap);
}

// ---- controls -------------------------------------------------------------------------------

function say(id, text) {
  const element = $(id);
  element.textContent = text;
  element.hidden = !text;
}

function syncControls() {
  const { from, to, seg, mode } = kpi.state;
  for (const [input, day] of [[$("from"), from], [$("to"), to]]) {
    // never under the reader's fingers (a date being typed); a clipped date shows on leaving
    if (input !== document.activeElement && input.value !== dayText(day)) {
      input.value = dayText(day);
    }
  }
  for (const input of [$("from"), $("to")]) {
    input.setCustomValidity("");
    input.removeAttribute("aria-invalid");
  }
  // One pressed button: the preset last clicked if it still matches, else the first that does
  // (with little history "90 days" and "All" can be the same days).
  const buttons = [...document.querySelectorAll("[data-preset]")];
  const matches = buttons.filter((button) => {
    const range = presetRange(button.dataset.preset);
    return range.from === from && range.to === to;
  });
  const chosen = matches.find((button) => button.dataset.preset === kpi.state.preset)
    || matches[0];
  for (const button of buttons) button.setAttribute("aria-pressed", String(button === chosen));
  if ($("seg")) $("seg").value = seg;
  for (const radio of document.querySelectorAll("input[name=mode]")) {
    radio.checked = radio.value === mode;
  }
}

function fillPicker(items) {
  const picker = $("series-picker");
  picker.hidden = items.length < 2;
  if (picker.hidden) return;
  $("show-all").hidden = items.length <= TOP;
  $("show-top").hidden = items.length <= TOP;
  $("picker-title").textContent = kpi.state.seg === "Total" ? "Steps shown" : `${kpi.state.seg} shown`;
  const visible = visibleItems(items);
  const list = picker.querySelector(".checks");
  const key = JSON.stringify(items);
  if (list.dataset.items === key) { // same segments: update in place, focus stays put
    for (const box of list.querySelectorAll("input[type=checkbox]")) {
      box.checked = visible.includes(box.value);
    }
    return;
  }
  list.dataset.items = key;
  list.replaceChildren();
  items.forEach((item) => {
    const label = document.createElement("label");
    label.className = "check";
    const box = document.createElement("input");
    box.type = "checkbox";
    box.value = item;
    box.checked = visible.includes(item);
    const swatch = document.createElement("span");
    swatch.className = "swatch";
    swatch.style.background = colourOf(items, item);
    swatch.setAttribute("aria-hidden", "true");
    const text = document.createElement("span");
    text.textContent = labelOf(item);
    label.append(box, swatch, text);
    list.append(label);
  });
}

function onToggle(event) {
  const box = event.target;
  if (box.type !== "checkbox") return;
  const boxes = [...$("series-picker").querySelectorAll("input[type=checkbox]")];
  const checked = boxes.filter((b) => b.checked).map((b) => b.value);
  if (!checked.length) {
    box.checked = true; // the last visible series cannot be hidden
    say("picker-note", "At least one series stays visible.");
    return;
  }
  kpi.state.show = checked;
  render();
}

function applyRange(from, to, note = "") {
  kpi.state.from = from;
  kpi.state.to = to;
  say("range-error", note);
  render();
}

function onDateChange(event) {
  const inputs = { from: $("from"), to: $("to") };
  // Chromium reports a change on every typed part of a date (a year of "0002" on the way to
  // "2026"): a year still being typed is refused; a whole date past the published days is
  // clipped to them, as in the address (the field keeps what is typed until it is left).
  const typing = Object.values(inputs).some((input) => input.value.startsWith("0"));
  const range = checkRange(dayNumber(inputs.from.value), dayNumber(inputs.to.value),
    { clip: !typing });
  for (const input of Object.values(inputs)) {
    input.setCustomValidity("");
    input.removeAttribute("aria-invalid");
  }
  if (range.problem) {
    const incomplete = [inputs.from, inputs.to].find((input) => Number.isNaN(dayNumber(input.value)));
    const culprit = incomplete || event.target; // else the field just edited
    culprit.setCustomValidity(range.problem);
    culprit.setAttribute("aria-invalid", "true");
    say("range-error", range.problem);
    return;
  }
  applyRange(range.from, range.to, range.note);
}

function wire() {
  for (const button of document.querySelectorAll("[data-preset]")) {
    button.addEventListener("click", () => {
      const { from, to } = presetRange(button.dataset.preset);
      kpi.state.preset = button.dataset.preset;
      applyRange(from, to);
    });
  }
  for (const [input, key] of [[$("from"), "from"], [$("to"), "to"]]) {
    input.addEventListener("change", onDateChange);
    input.addEventListener("blur", () => { // show the day the view uses (e.g. clipped)
      if (!input.hasAttribute("aria-invalid") && kpi.state[key] !== undefined) {
        input.value = dayText(kpi.state[key]);
      }
    });
  }
  if ($("seg")) {
    $("seg").addEventListener("change", () => {
      kpi.state.seg = $("seg").value;
      kpi.state.show = null;
      render();
    });
  }
  for (const radio of document.querySelectorAll("input[name=mode]")) {
    radio.addEventListener("change", () => { kpi.state.mode = radio.value; render(); });
  }
  $("series-picker").addEventListener("change", onToggle);
  $("show-all").addEventListener("click", () => {
    kpi.state.show = itemsOf(kpi.state.seg);
    render();
  });
  $("show-top").addEventListener("click", () => { kpi.state.show = null; render(); });
  $("data-table").addEventListener("toggle", fillDataTable);
  $("download-view").addEventListener("click", downloadView);
  onThemeChange(() => render());
}

// ---- one render -----------------------------------------------------------------------------

let running = null;
let again = false;

/** Draw the current state; calls made while drawing merge into one more draw. */
function render() {
  kpi.ready = false;
  if (running) {
    again = true;
    return running;
  }
  running = (async () => {
    do {
      again = false;
      try {
        await renderNow();
      } catch (error) {
        $("views").hidden = true;
        if (error.reloading) { // a newer build: the page is reloading as it
          say("empty", "A newer build of the site was published: reloading…");
          console.info(error.message);
        } else {
          say("empty", `This view could not be drawn (${error.message}).`);
          console.error(error);
        }
      }
    } while (again);
    running = null;
    kpi.ready = true;
  })();
  return running;
}

async function renderNow() {
  const items = itemsOf(kpi.state.seg);
  if (kpi.state.show) { // names that are not segments of this segmentation are dropped
    kpi.state.show = kpi.state.show.filter((item) => items.includes(item));
    if (!kpi.state.show.length) kpi.state.show = null;
  }
  syncControls();
  writeUrl();
  say("picker-note", ""); // "at least one series stays visible" was about the view before
  const { from, to, seg } = kpi.state;
  const file = await viewOf(seg, from, to);
  const i0 = 0;
  const i1 = to - from;
  if (page.problems.length) {
    kpi.quality = qualityDays(file, i1 + 1, page, await flagsOnce());
  }
  const present = [];
  for (let i = i0; i <= i1; i += 1) present.push(file.series.some((s) => hasRow(s, i)));
  fillPicker(items);
  const visible = visibleItems(items);
  const series = items.length
    ? file.series.filter((s) => visible.includes(seg === "Total" ? s.measure : s.segment))
    : file.series;
  if (!present.some(Boolean)) {
    say("empty", `No data between ${dayText(from)} and ${dayText(to)} for `
      + `${seg === "Total" ? "Total" : `the ${seg} segments`}. Pick another range.`);
    $("views").hidden = true;
    kpi.rows = [];
    kpi.funnel = [];
    kpi.flags = [];
    if ($("funnel-table")) fillFunnelTable(funnelNumbers(file, [], [], i0, i1));
  } else {
    say("empty", "");
    $("views").hidden = false;
    if (page.layout === "funnel") await drawFunnel(file, file.series, items, i0, i1, present);
    else await drawSeries(file, series, items, i0, i1, present);
  }
  fillDataTable();
  fillProblemDays();
  await fillFlagList();
  kpi.renders += 1;
}

function start() {
  if (!page.first_day) {
    say("empty", "No day has been aggregated yet: run the pipeline, then rebuild the site.");
    $("views").hidden = true;
    for (const control of document.querySelectorAll(".controls button, .controls input, .controls select")) {
      control.disabled = true;
    }
    kpi.ready = true;
    return;
  }
  for (const input of [$("from"), $("to")]) {
    input.min = page.first_day;
    input.max = page.last_day;
  }
  const { state, notes } = readState();
  kpi.state = state;
  say("range-error", notes.join(" "));
  wire();
  render();
}

start();
