// Workflows: the stored workflows in id order, 50 a page (GET /api/v1/workflows with its id
// cursor), with their status and size; open one by id. A workflow's tree is its own page.

import {h, replace, table, fmtAgo, fmtNumber, badge} from "../dom.js";
import {CursorPager} from "../pager.js";

const PAGE = 50;

export function flowBadge(status) {
  return badge(status, {completed: "ok", failed: "bad", cancelled: "info", running: "running",
                        pending: "pending"}[status]);
}

export default {
  id: "workflows",
  title: "Workflows",
  mount(root, ctx, params) {
    const list = h("div", {});
    const pager = new CursorPager(ctx, async (cursor) => {
      const data = await ctx.api.workflows({after: cursor || "", limit: PAGE});
      return {items: data.workflows, next: data.next_cursor, data};
    }, params.after || null);
    const idInput = h("input", {name: "id", placeholder: "workflow id", size: 36,
                                "data-testid": "workflow-id-input"});
    root.append(h("section", {class: "panel"},
      h("form", {class: "toolbar", onsubmit: (ev) => {
        ev.preventDefault();
        if (idInput.value.trim()) ctx.go(`#/workflow/${encodeURIComponent(idInput.value.trim())}`);
      }}, idInput, h("button", {type: "submit", "data-nav": "open-workflow"}, "Open")),
      h("p", {class: "hint"}, "Chains, groups and chords submitted in one request " +
        "(docs/workflows.md). Finished workflows stay until persistence retention purges them."),
      list, pager.nav));

    return async () => {
      await pager.load();
      const data = pager.page.data;
      const columns = [
        {title: "id", cell: (w) => h("a", {href: `#/workflow/${encodeURIComponent(w.id)}`,
                                            class: "mono"}, w.id)},
        {title: "status", cell: (w) => h("span", {"data-testid": "workflow-status"},
          flowBadge(w.status))},
        {title: "tasks", class: "num", cell: (w) => fmtNumber(w.size)},
        {title: "created", cell: (w) => fmtAgo(w.created_at)},
        {title: "updated", cell: (w) => fmtAgo(w.updated_at)},
        {title: "finished", cell: (w) => fmtAgo(w.finished_at)},
        {title: "error", class: "clip", cell: (w) => w.error || "—"},
      ];
      replace(list, table(columns, data.workflows, (w) => ({"data-workflow": w.id,
                                                             "data-status": w.status})));
    };
  },
};
