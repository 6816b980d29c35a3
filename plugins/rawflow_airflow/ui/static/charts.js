// Throughput and error-rate charts of the Rawflow view, drawn with the locally served plotly.min.js.
(function () {
  "use strict";
  var holder = document.getElementById("throughput");
  var note = document.getElementById("series-note");
  var errorsNote = document.getElementById("errors-note");
  var COLOURS = ["#2b6cb0", "#2f855a", "#b7791f", "#6b46c1", "#c53030", "#319795", "#d53f8c"];

  // Plotly ignores a zone offset in a date string: give it UTC wall-clock time (the axis says UTC).
  function utc(ms) { return new Date(ms).toISOString().replace("T", " ").slice(0, 19); }

  function draw(series) {
    var step = series.bucket_seconds * 1000;
    var start = Date.parse(series.since);
    var end = Date.now();
    var first = Math.floor(start / step) * step;
    var buckets = [];
    for (var t = first; t <= end; t += step) { buckets.push(t); }
    var order = (holder.getAttribute("data-sites") || "").split(",").filter(Boolean);
    var seen = {};
    series.points.forEach(function (p) { seen[p.site] = true; });
    Object.keys(seen).sort().forEach(function (s) { if (order.indexOf(s) < 0) { order.push(s); } });
    var values = {};
    series.points.forEach(function (p) {
      var key = p.site + "@" + Math.floor(Date.parse(p.bucket) / step) * step;
      values[key] = p;
    });
    var x = buckets.map(utc);
    var anyBad = series.points.some(function (p) { return p.bad_files > 0; });
    var layout = function (title, unit, range) {
      var yaxis = { title: { text: unit }, rangemode: "tozero" };
      if (range) { yaxis.range = range; }
      return { title: { text: title }, margin: { t: 40, r: 20, b: 90, l: 60 }, yaxis: yaxis,
               xaxis: { type: "date", range: [utc(start), utc(end)], title: { text: "time (UTC)" } },
               legend: { orientation: "h", y: -0.35 } };
    };
    var config = { displaylogo: false, responsive: true };
    // No replica in a bucket is a throughput of 0, drawn as such (not a line across the gap).
    Plotly.newPlot("throughput", order.map(function (site, i) {
      return { x: x, name: site, type: "scatter", mode: "lines+markers", line: { color: COLOURS[i % COLOURS.length] },
               y: buckets.map(function (b) { var p = values[site + "@" + b]; return p ? p.throughput_bytes_per_s / 1048576 : 0; }) };
    }), layout("Throughput (replicas reaching validated/archived)", "MiB/s"), config);
    // A bucket without any finished replica has no error rate: nothing is drawn there.
    Plotly.newPlot("errors", order.map(function (site, i) {
      return { x: x, name: site, type: "bar", marker: { color: COLOURS[i % COLOURS.length] },
               y: buckets.map(function (b) { var p = values[site + "@" + b]; return p ? 100 * p.error_rate : null; }) };
    }), layout("Error rate (bad / (good + bad))", "%", anyBad ? null : [0, 100]), config);
    holder.setAttribute("data-points", String(series.points.length));
    errorsNote.textContent = anyBad ? "" : "No errors in this window: no replica went bad.";
    errorsNote.setAttribute("data-no-errors", anyBad ? "false" : "true");
    if (!series.available) { note.textContent = "No time series: the catalogue is not in the monitoring database."; }
  }

  fetch(holder.getAttribute("data-src"), { credentials: "same-origin", headers: { Accept: "application/json" } })
    .then(function (r) { if (!r.ok) { throw new Error("HTTP " + r.status); } return r.json(); })
    .then(draw)
    .catch(function (e) { holder.textContent = "Could not load the series: " + e.message; });
})();
