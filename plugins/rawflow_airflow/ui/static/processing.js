// DQM charge spectra of the Processing page, drawn with the locally served plotly.min.js from the JSON API.
(function () {
  "use strict";
  var holder = document.getElementById("dqm-plots");
  if (!holder) { return; }
  fetch(holder.dataset.src, { credentials: "same-origin" })
    .then(function (r) { if (!r.ok) { throw new Error("HTTP " + r.status); } return r.json(); })
    .then(function (status) {
      status.runs.filter(function (run) { return run.dqm && run.dqm.charge_spectrum; }).forEach(function (run) {
        var spectrum = run.dqm.charge_spectrum;
        var edges = spectrum.edges, counts = spectrum.counts;
        var centres = counts.map(function (_, i) {
          return i + 1 < edges.length ? (edges[i] + edges[i + 1]) / 2 : edges[edges.length - 1];
        });
        var div = document.createElement("div");
        div.className = "chart";
        holder.appendChild(div);
        Plotly.newPlot(div, [{ x: centres, y: counts, type: "bar", name: "run " + run.run }], {
          // textContent-like: titles are plain data from our own JSON (numbers), set as text by plotly.
          title: { text: "Block " + String(run.block_id) + ", run " + String(run.run) + ": " + String(run.dqm.events) + " events" },
          margin: { t: 40, r: 20, b: 40, l: 60 }, xaxis: { title: { text: "total charge [p.e.]" } },
          yaxis: { title: { text: "events" }, rangemode: "tozero" }
        }, { displaylogo: false, responsive: true });
      });
    })
    .catch(function (err) {
      var p = document.createElement("p");
      p.className = "error";
      p.textContent = "DQM plots unavailable: " + err.message;
      holder.appendChild(p);
    });
})();
