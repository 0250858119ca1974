// Queues: depth by status for every queue, its rate and concurrency limit; pause and
// resume, set and clear a limit (admin).

import {h, replace, table, fmtNumber, badge, makeHash} from "../dom.js";

const COUNTS = ["pending", "scheduled", "running", "failed", "dead", "completed", "cancelled"];

function limitText(l) {
  if (!l) return "—";
  const parts = [];
  if (l.rate !== null && l.rate !== undefined) {
    parts.push(`${fmtNumber(l.rate)}/s (burst ${fmtNumber(l.burst)})`);
  }
  if (l.concurrency !== null && l.concurrency !== undefined) {
    parts.push(`${fmtNumber(l.running)} of ${fmtNumber(l.concurrency)} running`);
  }
  const held = (l.throttled_rate || 0) + (l.throttled_concurrency || 0);
  return h("span", {"data-testid": "queue-limit",
                    title: `held back: ${l.throttled_rate} by rate, ` +
                           `${l.throttled_concurrency} by concurrency`},
    parts.join(", "), held ? h("span", {class: "hint"}, ` · held back ${fmtNumber(held)}×`) : null);
}

// Built once (not on every refresh), so what the operator types survives the polling.
function limitForm(ctx) {
  const field = (name, placeholder) => h("input", {name, placeholder, size: 10,
                                                   "data-testid": `limit-${name}`});
  const queue = field("queue", "queue");
  const rate = field("rate", "tasks/s");
  const burst = field("burst", "burst");
  const concurrency = field("concurrency", "concurrency");
  const number = (el) => (el.value.trim() === "" ? undefined : Number(el.value));
  return h("section", {class: "panel"}, h("h2", {}, "Rate and concurrency limit"),
    h("form", {class: "toolbar", onsubmit: (ev) => {
      ev.preventDefault();
      const spec = {rate: number(rate), burst: number(burst), concurrency: number(concurrency)};
      ctx.act(`limit ${queue.value}`, () => ctx.api.setLimit(queue.value.trim(), spec));
    }}, queue, rate, burst, concurrency,
      h("button", {type: "submit", "data-action": "set-limit"}, "Set limit"),
      h("button", {type: "button", "data-action": "clear-limit", class: "warn", onclick: () =>
        ctx.act(`clear limit ${queue.value}`, () => ctx.api.clearLimit(queue.value.trim()))},
        "Clear limit")),
    h("p", {class: "hint"}, "Rate: tasks started per second across the cluster (a token " +
      "bucket of size burst); concurrency: at most that many running at once. Either or both."));
}

export default {
  id: "queues",
  title: "Queues",
  mount(root, ctx) {
    const body = h("section", {class: "panel"});
    root.append(body);
    if (ctx.can("admin")) root.append(limitForm(ctx));

    return async () => {
      const [data, limits] = await Promise.all([ctx.api.queues(), ctx.api.limits()]);
      const rows = Object.entries(data.queues).map(([name, counts]) => ({name, ...counts}));
      const columns = [
        {title: "queue", cell: (q) => h("a", {href: makeHash("tasks", {queue: q.name})}, q.name)},
        ...COUNTS.map((st) => ({
          title: st === "failed" ? "retrying" : st, class: "num",
          cell: (q) => q[st] ? h("a", {href: makeHash(
            st === "dead" || st === "failed" ? "failed" : "tasks", {queue: q.name, status: st})},
            fmtNumber(q[st])) : "0",
        })),
        {title: "limit", cell: (q) => limitText(limits.limits[q.name])},
        {title: "state", cell: (q) => q.paused ? badge("paused", "warn") : badge("active", "ok")},
      ];
      if (ctx.can("admin")) {
        columns.push({title: "", cell: (q) => q.paused
          ? h("button", {"data-action": "resume", onclick: () =>
              ctx.act(`resume ${q.name}`, () => ctx.api.resume(q.name))}, "Resume")
          : h("button", {"data-action": "pause", class: "warn", onclick: () =>
              ctx.act(`pause ${q.name}`, () => ctx.api.pause(q.name))}, "Pause")});
      }
      replace(body,
        h("h2", {}, `${rows.length} queue${rows.length === 1 ? "" : "s"}`),
        h("p", {class: "hint"}, "A paused queue keeps its tasks and takes new ones; " +
          "workers fetch nothing from it until it is resumed. \"retrying\" tasks failed " +
          "and wait for their next attempt."),
        table(columns, rows, (q) => ({"data-queue": q.name})));
    };
  },
};
