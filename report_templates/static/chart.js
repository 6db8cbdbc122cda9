// Renders the page's Vega-Lite spec (embedded as JSON) with the vendored vega-embed.
const spec = JSON.parse(document.getElementById("chart-spec").textContent);
window.vegaEmbed("#chart", spec, {
  mode: "vega-lite",
  renderer: "svg",
  actions: { export: true, source: false, compiled: false, editor: false },
}).catch((error) => {
  const target = document.getElementById("chart");
  target.textContent = "The chart could not be drawn: " + error;
  target.classList.add("error");
  console.error(error);
});
