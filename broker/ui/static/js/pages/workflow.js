// One workflow: its status, each group's and chord's progress (O(1) counters the broker
// keeps) and its tasks as a tree in tree order, each with its status; cancel with a
// cancel_tasks key. The tree is read from GET /api/v1/workflows/{id}, at most TASKS tasks.

import {h, replace, fmtTime, fmtAgo, fmtNumber, badge} from "../dom.js";
import {flowBadge} from "./workflows.js";

const TASKS = 500;  // a 100,000-task workflow is shown by its first 500 tasks and counters
const ACTIVE = ["pending", "running"];

function depth(role) {
  return Math.max(0, role.split(".").length - 1);
}

function label(role) {
  return role.split(".").pop();
}

function groupRow(g) {
  const done = g.completed + g.dead + g.cancelled;
  return h("li", {class: "tree-group", "data-group": g.node,
                  "data-depth": depth(g.role)},
    h("span", {class: "tree-role"}, label(g.role)), " ",
    badge(g.kind, "info"), " ",
    h("span", {"data-testid": "group-progress"},
      `${fmtNumber(done)} of ${fmtNumber(g.size)} done`),
    ` (${fmtNumber(g.completed)} completed, ${fmtNumber(g.dead)} dead, ` +
    `${fmtNumber(g.cancelled)} cancelled)`,
    g.kind === "chord" ? h("span", {class: "hint"}, ` on_error: ${g.on_error}`) : null);
}

function taskRow(t) {
  const known = t.status !== "waiting";
  return h("li", {"data-task": t.id, "data-status": t.status, "data-depth": depth(t.role)},
    h("span", {class: "tree-role"}, label(t.role)), " ",
    known ? h("a", {href: `#/task/${encodeURIComponent(t.id)}`, class: "mono"}, t.id)
      : h("span", {class: "mono"}, t.id), " ",
    h("span", {"data-testid": "member-status"}, badge(t.status)),
    t.error ? h("span", {class: "hint"}, ` ${t.error}`) : null);
}

// Group headers go right before their first member, so the list reads as the tree.
function tree(view) {
  const pending = [...view.groups];
  const items = [];
  for (const t of view.tasks) {
    while (pending.length && t.role.startsWith(`${pending[0].role}.member[`)) {
      items.push(groupRow(pending.shift()));
    }
    items.push(taskRow(t));
  }
  items.push(...pending.map(groupRow));
  return h("ol", {class: "tree", "data-testid": "workflow-tree"}, items);
}

export default {
  id: "workflow",
  title: "Workflow",
  mount(root, ctx, params, path) {
    const id = path[1] || "";
    const body = h("div", {});
    root.append(body);
    return async () => {
      let w;
      try {
        w = await ctx.api.workflow(id, {limit: TASKS});
      } catch (err) {
        if (err.code !== "NOTFOUND") throw err;
        replace(body, h("section", {class: "panel"}, h("h2", {}, "No such workflow"),
          h("p", {}, h("span", {class: "mono"}, id), " is not stored here (never " +
            "submitted, purged by retention, or not replicated to this node yet).")));
        return;
      }
      const actions = [];
      if (ctx.can("cancel_tasks") && ACTIVE.includes(w.status)) {
        actions.push(h("button", {"data-action": "cancel-workflow", class: "danger",
          onclick: () => ctx.act(`cancel workflow ${w.id}`, () => ctx.api.workflowCancel(w.id))},
          "Cancel workflow"));
      }
      replace(body,
        h("section", {class: "panel"},
          h("h2", {}, "Workflow ", h("span", {class: "mono", "data-testid": "workflow-id"}, w.id),
            " ", h("span", {"data-testid": "workflow-status"}, flowBadge(w.status))),
          actions.length ? h("div", {class: "actions"}, actions) : null,
          h("dl", {class: "fields"},
            h("dt", {}, "tasks"), h("dd", {}, fmtNumber(w.size)),
            h("dt", {}, "created"), h("dd", {}, `${fmtTime(w.created_at)} (${fmtAgo(w.created_at)})`),
            h("dt", {}, "updated"), h("dd", {}, `${fmtTime(w.updated_at)} (${fmtAgo(w.updated_at)})`),
            h("dt", {}, "finished"), h("dd", {}, fmtTime(w.finished_at)),
            h("dt", {}, "error"), h("dd", {"data-field": "error"}, w.error || "—")),
          h("p", {class: "hint"}, "Cancelling cancels the tasks that have not started; " +
            "running ones finish but no further step is submitted. A task not submitted " +
            "yet is \"waiting\".")),
        h("section", {class: "panel"}, h("h2", {}, "Tree"), tree(w),
          w.tasks_truncated ? h("p", {class: "hint"}, `The first ${fmtNumber(w.tasks.length)} ` +
            `of ${fmtNumber(w.size)} tasks are shown; the counters above cover all of them.`)
            : null));
    };
  },
};
