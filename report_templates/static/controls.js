// A report page's controls: the date range (presets and typed dates), the segmentation, lines
// or areas and the series picker, kept in step with the state; a change of any redraws.
import { colourOf, labelOf } from "./charts.js";
import { dayNumber, dayText } from "./days.js";
import { $, say } from "./dom.js";
import { TOP, checkRange, itemsOf, kpi, presetRange, visibleItems } from "./state.js";
import { downloadView, fillDataTable } from "./tables.js";
import { onThemeChange } from "./vega.js";

// Draws the page for the new state: the entry module's `render`, handed over by `wire` (the
// entry module imports this one, so importing `render` back would be a cycle).
let render = null;

/** Show the state in the controls: the dates, the pressed preset, the segmentation, the mode. */
export function syncControls() {
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

/** The series picker: a checkbox per item of `items` with its colour, the shown ones ticked. */
export function fillPicker(items) {
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

/** Listen to every control; a change updates the state and calls `redraw`. */
export function wire(redraw) {
  render = redraw;
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
