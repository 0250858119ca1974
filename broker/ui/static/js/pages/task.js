// One task: its fields, payload, result, error and backtrace, lease holder, a timeline of
// what is known of its states, and cancel/requeue when the key may.

import {h, replace, fmtTime, fmtAgo, fmtJson, badge} from "../dom.js";

const FINISHED = ["completed", "dead", "cancelled"];

function timeline(t) {
  const events = [
    ["submitted", t.created_at],
    ["due", t.run_at],
    ["started (last attempt)", t.started_at],
    ["lease expires", t.status === "running" ? t.lease_expires_at : null],
    [FINISHED.includes(t.status) ? t.status : "finished", t.finished_at],
    [`last change (now ${t.status})`, t.updated_at],
  ].filter(([, when]) => when !== null && when !== undefined)
    .sort((a, b) => a[1] - b[1]);
  return h("ol", {class: "timeline", "data-testid": "timeline"}, events.map(([what, when]) =>
    h("li", {}, h("span", {class: "mono"}, fmtTime(when)), ` ${what} (${fmtAgo(when)})`)));
}

function field(name, value) {
  return [h("dt", {}, name), h("dd", {"data-field": name}, value)];
}

function block(title, value, testid) {
  const empty = value === null || value === undefined || value === "";
  return h("section", {class: "panel"}, h("h2", {}, title),
    empty ? h("p", {class: "hint"}, "none")
      : h("pre", {"data-testid": testid}, typeof value === "string" ? value : fmtJson(value)));
}

export default {
  id: "task",
  title: "Task",
  mount(root, ctx, params, path) {
    const id = path[1] || "";
    const body = h("div", {});
    root.append(body);
    return async () => {
      let t;
      try {
        t = await ctx.api.task(id);
      } catch (err) {
        if (err.code !== "NOTFOUND") throw err;
        replace(body, h("section", {class: "panel"}, h("h2", {}, "No such task"),
          h("p", {}, h("span", {class: "mono"}, id), " is not stored here (never " +
            "submitted, purged by retention, or not replicated to this node yet).")));
        return;
      }
      const actions = [];
      if (ctx.can("cancel_tasks") && !FINISHED.includes(t.status)) {
        actions.push(h("button", {"data-action": "cancel", class: "danger", onclick: () =>
          ctx.act(`cancel ${t.id}`, () => ctx.api.cancel(t.id))}, "Cancel"));
      }
      if (ctx.can("cancel_tasks") && (t.status === "dead" || t.status === "cancelled")) {
        actions.push(h("button", {"data-action": "requeue", onclick: () =>
          ctx.act(`requeue ${t.id}`, () => ctx.api.requeue(t.id))}, "Requeue"));
      }
      replace(body,
        h("section", {class: "panel"},
          h("h2", {}, "Task ", h("span", {class: "mono", "data-testid": "task-id"}, t.id), " ",
            h("span", {"data-testid": "task-status"}, badge(t.status))),
          actions.length ? h("div", {class: "actions"}, actions) : null,
          h("dl", {class: "fields"},
            field("type", t.type), field("queue", t.queue), field("priority", String(t.priority)),
            field("attempts", `${t.attempts} of ${t.max_retries + 1}`),
            field("lease holder", t.worker || "—"),
            field("lease expires", t.status === "running" ? fmtTime(t.lease_expires_at) : "—"),
            field("timeout", t.timeout_secs ? `${t.timeout_secs} s` : "worker default"),
            field("retry backoff", `${t.retry_backoff_secs} s`),
            field("idempotency key", t.idempotency_key || "—"))),
        h("section", {class: "panel"}, h("h2", {}, "Timeline"), timeline(t)),
        block("Payload", t.payload, "payload"),
        block("Result", t.result, "result"),
        block("Error", t.error, "error"),
        block("Backtrace", t.backtrace, "backtrace"));
    };
  },
};
