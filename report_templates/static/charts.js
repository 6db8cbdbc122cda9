// A report page's charts: the rows, marks and descriptions of its lines or areas, of its problem
// counts (data quality) and of its funnel with one small chart per step, drawn from a view.
import { extent, formatValue, plural, share, shownValue } from "./arithmetic.js";
import { DAY_MS, dayNumber, dayText } from "./days.js";
import { $ } from "./dom.js";
import { describeFlags, flagMarks, loadFlags } from "./flags.js";
import { kpi, page, reportNames, visibleItems } from "./state.js";
import { draw, release } from "./vega.js";

const CANVAS_ABOVE = 2500; // points; beyond this the charts draw on a canvas

/** The colour of `item` among the toggleable `items` (the first for an unknown item). */
export function colourOf(items, item) {
  const index = Math.max(0, items.indexOf(item));
  return page.palette[index % page.palette.length];
}

/** A measure as the page names it (the data quality counts have labels; steps are names). */
export function labelOf(measure) {
  return page.labels[measure] || measure;
}

function seriesLabel(file, s) {
  if (file.segmentation !== "Total") return s.segment;
  return page.layout === "series" ? "Total" : labelOf(s.measure);
}

/** The `rows` dataset of `series` over day indexes `i0` to `i1` (`present`: days with data). */
function timeRows(file, series, items, i0, i1, present) {
  const rows = [];
  const origin = dayNumber(file.first_day);
  for (const s of series) {
    const item = file.segmentation === "Total" ? s.measure : s.segment;
    const rank = Math.max(0, items.indexOf(item));
    const color = items.length ? colourOf(items, item) : page.palette[0];
    const foldedDays = file.segmentation === "Total" ? null : file.folded.get(s.segment);
    for (let i = i0; i <= i1; i += 1) {
      const folded = Boolean(foldedDays && foldedDays.has(origin + i));
      rows.push({
        date: (origin + i) * DAY_MS,
        series: seriesLabel(file, s),
        measure: s.measure,
        color,
        rank,
        value: shownValue(file.kind, s, i, { dayHasData: present[i], folded }),
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

/** The `flags` dataset of a chart drawn from `rows` (see `flagMarks`). */
async function flagRows(rows, stacked = false) {
  return flagMarks(await loadFlags(page.build), rows, {
    report: page.report, segmentation: kpi.state.seg, percent: page.percent, stacked,
    reports: reportNames, labels: page.labels,
  });
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

// ---- drawing --------------------------------------------------------------------------------

function describe(file, rows, from, to) {
  const scope = file.segmentation === "Total" ? "Total" : `by ${file.segmentation}`;
  const range = `${dayText(from)} to ${dayText(to)} (UTC)`;
  const names = [...new Set(rows.map((r) => r.series))];
  const valued = rows.filter((r) => r.value !== null);
  if (!valued.length) return `${page.title}, ${range}, ${scope}: no values.`;
  if (names.length === 1) {
    const latest = valued[valued.length - 1];
    const [lowest, highest] = extent(valued.map((r) => r.value));
    return `${page.title}, ${range}, ${scope}: ${plural(valued.length, "day")} with a value; latest `
      + `${formatValue(latest.value, page.percent)} on ${dayText(latest.date / DAY_MS)}; lowest `
      + `${formatValue(lowest, page.percent)}, highest `
      + `${formatValue(highest, page.percent)}.`;
  }
  return `${page.title}, ${range}, ${scope}: ${names.length} series (${names.join(", ")}), `
    + `${plural(valued.length, "value")}.`;
}

/** Draw the lines or areas of `shown` (and, on the data quality page, its problem counts). */
export async function drawSeries(file, shown, items, i0, i1, present) {
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

/**
 * Draw the funnel of `numbers` (see `funnelNumbers`) and one small chart per step of its
 * shown segments over time.
 */
export async function drawFunnel(file, numbers, series, items, i0, i1, present) {
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
        share: share(numbers.bySegment.get(segment)[j], numbers.totals[0]),
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
