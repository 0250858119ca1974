// Queues: depth by status for every queue; pause and resume (admin).

import {h, replace, table, fmtNumber, badge, makeHash} from "../dom.js";

const COUNTS = ["pending", "scheduled", "running", "failed", "dead", "completed", "cancelled"];

export default {
  id: "queues",
  title: "Queues",
  mount(root, ctx) {
    const body = h("section", {class: "panel"});
    root.append(body);

    return async () => {
      const data = await ctx.api.queues();
      const rows = Object.entries(data.queues).map(([name, counts]) => ({name, ...counts}));
      const columns = [
        {title: "queue", cell: (q) => h("a", {href: makeHash("tasks", {queue: q.name})}, q.name)},
        ...COUNTS.map((st) => ({
          title: st === "failed" ? "retrying" : st, class: "num",
          cell: (q) => q[st] ? h("a", {href: makeHash(
            st === "dead" || st === "failed" ? "failed" : "tasks", {queue: q.name, status: st})},
            fmtNumber(q[st])) : "0",
        })),
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
