// Overview: live throughput and depths (charts), lifetime totals, this node's health.

import {h, replace, fmtNumber, fmtBytes, badge} from "../dom.js";
import {lineChart, stackedBars} from "../charts.js";
import * as history from "../history.js";

const STATUS_PARTS = [
  ["pending", "pending"], ["scheduled", "scheduled"], ["running", "running"],
  ["failed", "failed"], ["dead", "dead"],
];

function card(label, value, testid) {
  return h("div", {class: "card", "data-testid": testid},
    h("div", {class: "card-value"}, value), h("div", {class: "card-label"}, label));
}

export default {
  id: "overview",
  title: "Overview",
  mount(root, ctx) {
    const health = h("div", {class: "cards"});
    const charts = h("div", {class: "chart-grid"});
    const queues = h("section", {class: "panel"});
    const totals = h("section", {class: "panel"});
    root.append(health, charts, queues, totals);

    return async () => {
      const [stats, queueData, node] = await Promise.all(
        [ctx.lastStats(), ctx.api.queues(), ctx.api.health()]);
      const status = node && node.status;
      replace(health,
        card("node health", badge(status || "unknown", status === "healthy" ? "ok" : "bad"),
             "node-health"),
        card("node", `${stats.node_id} · ${stats.read_from.role}`, "node-role"),
        card("pending", fmtNumber(stats.tasks.pending), "current-pending"),
        card("running", fmtNumber(stats.tasks.running), "current-running"),
        card("dead", fmtNumber(stats.tasks.dead), "current-dead"),
        card("live workers", fmtNumber(stats.workers), "live-workers"),
        card("uptime", `${fmtNumber(Math.round(stats.uptime_secs))} s`, "uptime"));
      replace(charts,
        h("section", {class: "panel", "data-testid": "throughput-chart"},
          h("h2", {}, `Throughput, tasks per second (${history.spanLabel()})`),
          lineChart([
            {name: "submitted", cls: "submitted", points: history.rate("submitted")},
            {name: "completed", cls: "completed", points: history.rate("completed")},
            {name: "failed", cls: "failed", points: history.rate("failed")},
            {name: "dead", cls: "dead", points: history.rate("dead")},
          ], {windowSecs: history.span(), unit: "/s"})),
        h("section", {class: "panel", "data-testid": "depth-chart"},
          h("h2", {}, `Queue depth, all queues (${history.spanLabel()})`),
          lineChart([
            {name: "pending", cls: "pending", points: history.depth("pending")},
            {name: "running", cls: "running", points: history.depth("running")},
            {name: "scheduled + retrying", cls: "scheduled",
             points: history.depth("scheduled", "failed")},
            {name: "dead", cls: "dead", points: history.depth("dead")},
          ], {windowSecs: history.span()})));
      const rows = Object.entries(queueData.queues).map(([name, counts]) => ({
        label: counts.paused ? `${name} (paused)` : name,
        parts: STATUS_PARTS.map(([key, cls]) => ({name: key, cls, value: counts[key] || 0})),
      }));
      replace(queues, h("h2", {}, "Open tasks by queue"),
        stackedBars(rows),
        h("div", {class: "legend"}, STATUS_PARTS.map(([key, cls]) =>
          h("span", {class: "legend-item"}, h("span", {class: `swatch series-${cls}`}), key))));
      const t = stats.totals;
      const rocks = stats.rocksdb || {};
      replace(totals, h("h2", {}, "Lifetime totals (cluster-wide)"),
        h("div", {class: "cards small"},
          Object.keys(t).map((name) => card(name, fmtNumber(t[name]), `total-${name}`))),
        h("h2", {}, "This node"),
        h("div", {class: "cards small"},
          card("applied index", fmtNumber(stats.applied_index), "applied-index"),
          card("rates on this node", Object.entries(stats.rates_per_sec || {})
            .map(([k, v]) => `${k} ${fmtNumber(v)}/s`).join(", ") || "idle", "node-rates"),
          card("keys (estimate)", fmtNumber(rocks.estimate_num_keys), "rocks-keys"),
          card("SST files", fmtBytes(rocks.total_sst_files_bytes), "rocks-sst")));
    };
  },
};
