// The overview: how fresh the data is (from data/manifest.json, judged in the reader's browser,
// so a page cached or left open still tells the truth) and a sparkline per headline tile.
import { extent, formatValue, hoursText, plural } from "./arithmetic.js";
import { DAY_MS, dayNumber } from "./days.js";
import { embedded } from "./dom.js";
import { flagText, loadFlags } from "./flags.js";
import { draw, onThemeChange } from "./vega.js";

const overview = embedded("overview-config");
const STALE_HOURS = 36;
window.kpi = { ready: false, views: {}, flags: {} };

async function freshness() {
  const line = document.getElementById("freshness");
  try {
    const response = await fetch("data/manifest.json", { cache: "no-cache" });
    if (!response.ok) throw new Error(`HTTP ${response.status}`);
    const manifest = await response.json();
    const built = Date.parse(manifest.built_at);
    const builtText = `built ${hoursText((Date.now() - built) / 3_600_000)} ago (${manifest.built_at})`;
    if (!manifest.last_day) {
      line.textContent = `No data yet: no day has been aggregated; the site was ${builtText}.`;
      line.dataset.state = "empty";
      return;
    }
    // The newest day is complete at the end of that UTC day; its age is measured from then.
    const ended = (dayNumber(manifest.last_day) + 1) * DAY_MS;
    const age = (Date.now() - ended) / 3_600_000;
    if (age > STALE_HOURS) {
      line.textContent = `Stale: the newest data is for ${manifest.last_day}, which ended `
        + `${hoursText(age)} ago (more than ${STALE_HOURS} hours). The nightly run may have `
        + `failed or not run; the site was ${builtText}.`;
      line.dataset.state = "stale";
    } else {
      line.textContent = `Fresh: data through ${manifest.last_day} (UTC), which ended `
        + `${hoursText(Math.max(0, age))} ago; the site was ${builtText}.`;
      line.dataset.state = "fresh";
    }
  } catch (error) {
    line.textContent = `The build manifest could not be read (${error.message}); freshness unknown.`;
    line.dataset.state = "unknown";
  }
}

const build = document.querySelector('meta[name="kpi-build"]')?.content || "";

/** The tile's flags: its report and measure, Total, on a day of its sparkline. */
async function tileFlags(tile) {
  const days = new Set(tile.recent.map(([day]) => day));
  return (await loadFlags(build)).filter((f) => f.report === tile.report && f.measure === tile.measure
    && f.segmentation === "Total" && f.segment === "Total" && days.has(f.date));
}

/** Say on the tile which of its days were flagged (a symbol and the text; text only, no HTML). */
function markTile(tile, flags) {
  const element = document.getElementById(`flags-${tile.id}`);
  if (!element) return;
  element.replaceChildren();
  element.hidden = !flags.length;
  for (const flag of flags) {
    const line = document.createElement("span");
    line.className = "tile-flag";
    line.dataset.direction = flag.direction;
    const text = flagText(flag, tile.percent, true);
    line.title = text;
    const symbol = document.createElement("span");
    symbol.className = "flag-symbol";
    symbol.setAttribute("aria-hidden", "true");
    symbol.textContent = "◆"; // a flag; ▲ ▼ ■ are the week-over-week deltas
    line.append(symbol, ` ${text}`);
    element.append(line);
  }
}

async function sparklines() {
  const drawn = overview.tiles.map(async (tile) => {
    const element = document.getElementById(`spark-${tile.id}`);
    if (!element || !tile.recent.length) return;
    const flagged = await tileFlags(tile);
    markTile(tile, flagged);
    const flags = flagged.map((f) => ({ date: dayNumber(f.date) * DAY_MS, value: f.value,
      direction: f.direction, text: flagText(f, tile.percent, true) }));
    window.kpi.flags[tile.id] = flags;
    const rows = tile.recent.map(([day, value]) => ({ date: dayNumber(day) * DAY_MS, value }));
    const values = rows.filter((r) => r.value !== null).map((r) => r.value);
    const [lowest, highest] = extent(values);
    const description = `${tile.label}, last ${plural(rows.length, "day")}: `
      + (values.length ? `from ${formatValue(lowest, tile.percent)} to `
        + `${formatValue(highest, tile.percent)}` : "no values") + "."
      + flags.map((f) => ` ${f.text[0].toUpperCase()}${f.text.slice(1)}.`).join("");
    element.setAttribute("aria-label", description);
    window.kpi.views[tile.id] = await draw(element, overview.specs[tile.percent ? "percent" : "count"],
      { rows, flags }, overview.themes, { description, actions: false });
  });
  await Promise.all(drawn);
}

async function start() {
  await Promise.all([freshness(), sparklines()]);
  window.kpi.ready = true;
}

onThemeChange(sparklines);
start();
