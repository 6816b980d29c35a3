// Throughput and error-rate charts of the Rawflow view, drawn with the locally served plotly.min.js.
(function () {
  "use strict";
  var holder = document.getElementById("throughput");
  var note = document.getElementById("series-note");

  function bySite(points) {
    var sites = {};
    points.forEach(function (p) {
      var s = sites[p.site] || (sites[p.site] = { x: [], rate: [], errors: [] });
      s.x.push(p.bucket);
      s.rate.push(p.throughput_bytes_per_s / 1048576);
      s.errors.push(100 * p.error_rate);
    });
    return sites;
  }

  function draw(series) {
    var sites = bySite(series.points);
    var names = Object.keys(sites).sort();
    var layout = function (title, unit) {
      return { title: { text: title }, margin: { t: 40, r: 20, b: 40, l: 60 }, yaxis: { title: { text: unit }, rangemode: "tozero" },
               xaxis: { type: "date" }, legend: { orientation: "h" } };
    };
    Plotly.newPlot("throughput", names.map(function (n) {
      return { x: sites[n].x, y: sites[n].rate, name: n, type: "scatter", mode: "lines+markers" };
    }), layout("Throughput (replicas reaching validated/archived)", "MiB/s"), { displaylogo: false, responsive: true });
    Plotly.newPlot("errors", names.map(function (n) {
      return { x: sites[n].x, y: sites[n].errors, name: n, type: "bar" };
    }), layout("Error rate (bad / (good + bad))", "%"), { displaylogo: false, responsive: true });
    holder.setAttribute("data-points", String(series.points.length));
    if (!series.available) { note.textContent = "No time series: the catalogue is not in the monitoring database."; }
  }

  fetch(holder.getAttribute("data-src"), { credentials: "same-origin", headers: { Accept: "application/json" } })
    .then(function (r) { if (!r.ok) { throw new Error("HTTP " + r.status); } return r.json(); })
    .then(draw)
    .catch(function (e) { holder.textContent = "Could not load the series: " + e.message; });
})();
