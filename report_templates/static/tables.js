// A report page's tables: the funnel table, the data table of the view and its CSV download,
// and on the data quality page the flagged days and the problem days. Cells are text only.
import { formatValue, percentText, plural } from "./arithmetic.js";
import { DAY_MS, dayText } from "./days.js";
import { $ } from "./dom.js";
import { FLAG_COLUMNS, FLAG_LABELS, flagCells, loadFlags } from "./flags.js";
import { qualityTable } from "./quality.js";
import { kpi, page, reportNames } from "./state.js";

/** The funnel table of `funnelNumbers`: per step its count, its share of the first step, the
 * share of it taking the next step and the share of it completing all steps. */
export function fillFunnelTable({ steps, totals }) {
  const body = $("funnel-table").querySelector("tbody");
  body.replaceChildren();
  const lastStep = steps.length - 1;
  steps.forEach((step, j) => {
    const cells = [
      step,
      formatValue(totals[j], false),
      percentText(totals[j], totals[0]),
      j === lastStep ? "—" : percentText(totals[j + 1], totals[j]),
      percentText(totals[lastStep], totals[j]),
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

/** The data table of the view, drawn only while its <details> is open. */
export function fillDataTable() {
  const details = $("data-table");
  if (!details.open) return;
  const { header, rows, labels, numeric } = tableRows(true);
  const caption = `${plural(rows.length, "row")}, ${dayText(kpi.state.from)} to `
    + `${dayText(kpi.state.to)}`;
  const table = dataTable(page.problems.length ? "data quality" : "data", caption,
    header, rows, (name) => numeric.has(name), labels);
  details.querySelector(".table-wrap").replaceChildren(table);
}

function csvCell(value) {
  const text = String(value);
  return /[",\n]/.test(text) ? `"${text.replaceAll('"', '""')}"` : text;
}

/** Download the view's table as a CSV file named for the report, segmentation and days. */
export function downloadView() {
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

let flagListFilled = false;

/** Every flag of the build, as a table (or "No day flagged."), once per page load. */
export async function fillFlagList() {
  const box = $("flag-list");
  if (!box || flagListFilled) return;
  flagListFilled = true;
  const flags = await loadFlags(page.build);
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
    flags.map((flag) => flagCells(flag, reportNames, page.labels)),
    (name) => name === "value" || name === "baseline", FLAG_LABELS);
  const wrap = document.createElement("div");
  wrap.className = "table-wrap";
  wrap.append(table);
  box.replaceChildren(wrap);
}

// ---- problem days (data quality page) ------------------------------------------------------

/** The problem days of the chosen range, newest first, as a table (or says there are none). */
export function fillProblemDays() {
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
