// Workers: who is connected, what each runs now; tell one to go quiet (finish what it holds,
// take nothing new), stop, or become active again (admin).

import {h, replace, table, fmtAgo, badge, shortId} from "../dom.js";

const STATES = [["active", "Activate"], ["quiet", "Quiet"], ["stop", "Stop"]];

export default {
  id: "workers",
  title: "Workers",
  mount(root, ctx) {
    const body = h("section", {class: "panel"});
    root.append(body);
    return async () => {
      const [data, running] = await Promise.all(
        [ctx.api.workers(), ctx.api.tasks({status: "running", limit: 1000})]);
      const byWorker = {};
      for (const t of running.tasks) (byWorker[t.worker] = byWorker[t.worker] || []).push(t);
      const columns = [
        {title: "worker", cell: (w) => h("span", {class: "mono"}, w.worker_id)},
        {title: "host", cell: (w) => w.hostname || "—"},
        {title: "pid", class: "num", cell: (w) => w.pid === undefined ? "—" : String(w.pid)},
        {title: "queues", cell: (w) => (w.queues || []).join(", ") || "—"},
        {title: "concurrency", class: "num",
         cell: (w) => w.concurrency === undefined ? "—" : String(w.concurrency)},
        {title: "state", cell: (w) => h("span", {"data-testid": "worker-state"},
                                        badge(w.state, w.state === "active" ? "ok" : "warn"))},
        {title: "running now", cell: (w) => {
          const tasks = byWorker[w.worker_id] || [];
          return tasks.length ? tasks.slice(0, 5).map((t) => h("a", {
            href: `#/task/${encodeURIComponent(t.id)}`, class: "mono chip", title: t.id},
            `${t.type} ${shortId(t.id)}`)).concat(tasks.length > 5 ? [`+${tasks.length - 5}`] : [])
            : String(w.running || 0);
        }},
        {title: "last seen", cell: (w) => fmtAgo(w.last_seen)},
      ];
      if (ctx.can("admin")) {
        columns.push({title: "", cell: (w) => STATES.map(([state, label]) =>
          h("button", {"data-action": state, disabled: w.state === state,
                       class: state === "stop" ? "danger" : state === "quiet" ? "warn" : null,
                       onclick: () => ctx.act(`${state} ${w.worker_id}`,
                                              () => ctx.api.workerState(w.worker_id, state))},
            label))});
      }
      replace(body,
        h("h2", {}, `${data.workers.length} worker${data.workers.length === 1 ? "" : "s"}`),
        h("p", {class: "hint"}, "Quiet: finish the tasks held, fetch no more. Stop: shut " +
          "down after that. A worker gone for longer than its lease timeout leaves the list " +
          "when the broker expires it."),
        table(columns, data.workers, (w) => ({"data-worker": w.worker_id})));
    };
  },
};
