// The lambdarec dashboard: polls dashboard/data every 2 s and draws every chart with plotly.js.
// Each chart's element carries data-points (the points it draws) so a test or a person can
// tell a chart with data from an empty one.
"use strict";

const POLL_MS = 2000;
const DATA_URL = "dashboard/data";
const PLOT_CONFIG = { displayModeBar: false, responsive: true };
const STATUS_COLOURS = { published: "#2ca02c", rejected: "#d62728" };

const HEIGHT = 250;
const LEGEND_ROW = 19; // pixels per legend entry beyond the first two: long route names get a line each
const TIME_AXIS = { type: "date", tickformat: "%H:%M:%S" };

function baseLayout(unit, traces, extra) {
  return Object.assign({
    height: HEIGHT + LEGEND_ROW * Math.max(0, traces - 2),
    margin: { l: 60, r: 16, t: 16, b: 40 },
    paper_bgcolor: "rgba(0,0,0,0)",
    plot_bgcolor: "rgba(0,0,0,0)",
    font: { size: 11 },
    xaxis: TIME_AXIS,
    yaxis: { title: { text: unit }, rangemode: "tozero" },
    legend: { orientation: "h", y: -0.12, yanchor: "top", font: { size: 10 }, maxheight: 0.6 },
    showlegend: true,
    uirevision: "keep", // keep a reader's zoom across updates
  }, extra || {});
}

function dates(seconds) {
  return seconds.map((s) => new Date(s * 1000));
}

// The chart's element, created (before the fixed trending and models cards) the first time it is drawn.
function chartElement(id, title) {
  let element = document.getElementById("chart-" + id);
  if (!element) {
    const section = document.createElement("section");
    section.className = "card";
    section.appendChild(document.createElement("h2"));
    element = document.createElement("div");
    element.className = "chart";
    element.id = "chart-" + id;
    element.dataset.chart = id;
    element.dataset.points = "0";
    section.appendChild(element);
    const fixed = document.getElementById("chart-trending").parentElement;
    document.getElementById("charts").insertBefore(section, fixed);
  }
  element.parentElement.querySelector("h2").textContent = title;
  return element;
}

function draw(element, traces, layout, points) {
  element.dataset.points = String(points);
  if (!points) {
    layout.annotations = [{ text: "no data yet", showarrow: false, xref: "paper", yref: "paper", x: 0.5, y: 0.5 }];
  }
  Plotly.react(element, traces, layout, PLOT_CONFIG);
}

// The time every time-series chart starts at, so that they line up: the oldest point of any (a minute at least).
function since(charts, now) {
  return Math.min(now - 60, ...charts.flatMap((chart) => chart.series.map((s) => (s.t.length ? s.t[0] : now))));
}

const PALETTE = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf"];
const QUANTILE_OF = /^(p\d+) (.+)$/; // "p99 /v1/events": a quantile of one route

// One line per series. Quantiles per route ("p50 /x", "p99 /x") share the route's colour and one legend
// entry, the highest quantile solid and the others dotted, so the legend stays one line per route.
function timeSeriesTraces(series) {
  const groups = series.map((s) => QUANTILE_OF.exec(s.name));
  if (!series.length || groups.some((match) => !match)) {
    return series.map((s) => ({ type: "scatter", mode: "lines", name: s.name, x: dates(s.t), y: s.y }));
  }
  const routes = [...new Set(groups.map((match) => match[2]))];
  const highest = groups.map((match) => match[1]).sort((a, b) => Number(b.slice(1)) - Number(a.slice(1)))[0];
  return series.map((s, i) => {
    const [, quantile, route] = groups[i];
    const top = quantile === highest;
    return {
      type: "scatter", mode: "lines", name: route, legendgroup: route, showlegend: top,
      hovertemplate: quantile + " %{y:.3g}<extra>" + route + "</extra>", x: dates(s.t), y: s.y,
      line: { color: PALETTE[routes.indexOf(route) % PALETTE.length], dash: top ? "solid" : "dot" },
    };
  });
}

function drawTimeSeries(chart, start, now) {
  const traces = timeSeriesTraces(chart.series);
  const grouped = traces.some((trace) => trace.legendgroup);
  const quantiles = grouped ? ": " + [...new Set(chart.series.map((s) => s.name.split(" ")[0]))].join(" dotted, ") + " solid" : "";
  const element = chartElement(chart.id, chart.title + " (" + chart.unit + (chart.log ? ", log scale" : "") + quantiles + ")");
  const points = chart.series.reduce((n, s) => n + s.y.length, 0);
  if (chart.threshold !== null && chart.threshold !== undefined) {
    traces.push({
      type: "scatter", mode: "lines", name: "SLO " + chart.threshold + " " + chart.unit, meta: "threshold",
      x: dates([start, now]), y: [chart.threshold, chart.threshold],
      line: { dash: "dash", color: "#d62728" }, hoverinfo: "skip",
    });
  }
  const entries = traces.filter((trace) => trace.showlegend !== false).length;
  const yaxis = chart.log ? { title: { text: chart.unit }, type: "log" } : { title: { text: chart.unit }, rangemode: "tozero" };
  draw(element, traces, baseLayout(chart.unit, entries, { xaxis: { ...TIME_AXIS, range: dates([start, now]) }, yaxis }), points);
}

function drawTrending(trending) {
  const items = trending.items.slice().reverse(); // best at the top
  const traces = [{ type: "bar", orientation: "h", name: "weight", x: items.map((i) => i.score), y: items.map((i) => i.item_id) }];
  const title = trending.window_start ? "window from " + trending.window_start : "";
  draw(document.getElementById("chart-trending"), traces,
    baseLayout("", 1, { xaxis: { title: { text: title } }, yaxis: { automargin: true, type: "category" }, showlegend: false }),
    items.length);
}

// One point per evaluated version, in version order (which is time order): its gate metric, coloured by
// status, with popularity's figure on the same holdout as a dotted line; the time is in the hover.
function drawModels(models) {
  document.getElementById("models-title").textContent = "Models over time: " + models.metric + " per version";
  const evaluated = models.versions.filter((v) => v.metric !== null);
  const statuses = [...new Set(evaluated.map((v) => v.status))];
  const traces = statuses.map((status) => {
    const versions = evaluated.filter((v) => v.status === status);
    return {
      type: "scatter", mode: "markers+text", name: status, textposition: "top center", cliponaxis: false,
      x: versions.map((v) => v.model_version), y: versions.map((v) => v.metric),
      text: versions.map((v) => (v.serving ? "serving" : "")),
      customdata: versions.map((v) => new Date(v.recorded_at * 1000).toLocaleString()),
      hovertemplate: "v%{x} " + status + " %{customdata}<br>" + models.metric + " %{y:.4f}<extra></extra>",
      marker: { size: versions.map((v) => (v.serving ? 14 : 10)), color: STATUS_COLOURS[status] || "#7f7f7f" },
    };
  });
  const baselines = evaluated.filter((v) => v.baseline !== null);
  if (baselines.length) {
    traces.push({
      type: "scatter", mode: "lines+markers", name: "popularity baseline", meta: "baseline",
      x: baselines.map((v) => v.model_version), y: baselines.map((v) => v.baseline),
      line: { dash: "dot", color: "#7f7f7f" },
    });
  }
  const top = Math.max(0, ...evaluated.map((v) => v.metric), ...baselines.map((v) => v.baseline));
  const versions = evaluated.map((v) => v.model_version);
  const xaxis = { dtick: 1, tickprefix: "v",
                  range: versions.length ? [Math.min(...versions) - 0.5, Math.max(...versions) + 0.5] : undefined };
  draw(document.getElementById("chart-models"), traces,
    baseLayout(models.metric, traces.length, { xaxis, yaxis: { title: { text: models.metric }, range: [0, top * 1.25 || 1] } }),
    evaluated.length);
}

function showStatus(data) {
  const serving = data.models.versions.find((v) => v.serving);
  document.getElementById("status").textContent = [
    "source: " + (data.source === "prometheus" ? "Prometheus" : "serving's own samples"),
    "last " + Math.round(data.window_s / 60) + " min",
    "serving model " + (serving ? "v" + serving.model_version : "none"),
    "updated " + new Date(data.generated_at * 1000).toLocaleTimeString(),
  ].join(" · ");
  const notes = document.getElementById("notes");
  notes.replaceChildren(...data.notes.map((text) => {
    const item = document.createElement("li");
    item.textContent = text;
    return item;
  }));
}

async function refresh() {
  try {
    const response = await fetch(DATA_URL, { cache: "no-store" });
    if (!response.ok) throw new Error("HTTP " + response.status);
    const data = await response.json();
    const start = since(data.charts, data.generated_at);
    data.charts.forEach((chart) => drawTimeSeries(chart, start, data.generated_at));
    drawTrending(data.trending);
    drawModels(data.models);
    showStatus(data);
    document.body.dataset.updated = String(data.generated_at);
  } catch (error) {
    document.getElementById("status").textContent = "dashboard data unavailable: " + error.message;
  } finally {
    setTimeout(refresh, POLL_MS);
  }
}

refresh();
