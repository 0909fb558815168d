// Draws the plotly figures the server put in <div class="plotly-figure" data-figure="..."> placeholders
// (backend/app/deps.py figure_html): the pages carry no inline scripts.
if (window.Plotly) {
  document.querySelectorAll(".plotly-figure[data-figure]").forEach((element) => {
    const figure = JSON.parse(element.dataset.figure);
    Plotly.newPlot(element, figure.data, figure.layout, JSON.parse(element.dataset.config || "{}"));
  });
}
