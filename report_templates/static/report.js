// A report page: date range, segmentation, series toggles, charts, funnel table and data table,
// all computed here from the page's view files. This module only wires the others: it reads
// the state from the URL, listens to the controls and draws each state once.
import { funnelNumbers, hasRow } from "./arithmetic.js";
import { drawFunnel, drawSeries } from "./charts.js";
import { fillPicker, syncControls, wire } from "./controls.js";
import { dayText } from "./days.js";
import { $, say } from "./dom.js";
import { loadFlags } from "./flags.js";
import { qualityDays } from "./quality.js";
import { itemsOf, kpi, page, readState, visibleItems, writeUrl } from "./state.js";
import { fillDataTable, fillFlagList, fillFunnelTable, fillProblemDays } from "./tables.js";
import { viewOf } from "./views.js";

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
    kpi.quality = qualityDays(file, i1 + 1, page, await loadFlags(page.build));
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
    if ($("funnel-table")) {
      fillFunnelTable(funnelNumbers(file.kind, page.measures, [], null, i0, i1));
    }
  } else {
    say("empty", "");
    $("views").hidden = false;
    if (page.layout === "funnel") {
      const numbers = funnelNumbers(file.kind, page.measures, file.series,
        items.length ? visible : null, i0, i1);
      fillFunnelTable(numbers);
      await drawFunnel(file, numbers, file.series, items, i0, i1, present);
    } else {
      await drawSeries(file, series, items, i0, i1, present);
    }
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
  wire(render);
  render();
}

start();
