// A page of tasks from GET /api/v1/tasks with cursor pagination, shared by the Tasks,
// Failed and Scheduled pages. The cursor is the broker's (a key in its index): a page costs
// the same with a million tasks stored as with ten.

import {h, replace, table, fmtAgo, badge, shortId} from "./dom.js";

export const STATUSES = ["pending", "scheduled", "running", "completed", "failed", "dead",
                         "cancelled"];

export const COLUMNS = {
  id: {title: "id", cell: (t) => h("a", {href: `#/task/${encodeURIComponent(t.id)}`,
                                          class: "mono", title: t.id}, shortId(t.id))},
  type: {title: "type", cell: (t) => t.type},
  queue: {title: "queue", cell: (t) => t.queue},
  status: {title: "status", cell: (t) => badge(t.status)},
  priority: {title: "priority", class: "num", cell: (t) => String(t.priority)},
  attempts: {title: "attempts", class: "num", cell: (t) => `${t.attempts}/${t.max_retries + 1}`},
  worker: {title: "lease holder", cell: (t) => t.worker || "—"},
  created: {title: "created", cell: (t) => fmtAgo(t.created_at)},
  updated: {title: "updated", cell: (t) => fmtAgo(t.updated_at)},
  runAt: {title: "runs", cell: (t) => fmtAgo(t.run_at)},
  error: {title: "error", class: "clip", cell: (t) => t.error || "—"},
};

// Keeps the cursors of the pages seen so far, so "previous" goes back without a reverse
// scan. refresh() re-reads the current page (live view).
export class TaskPager {
  constructor(ctx, query, pageSize = 50) {
    this.ctx = ctx;
    this.query = query;
    this.pageSize = pageSize;
    this.cursors = [null];
    this.next = null;
    this.tasks = [];
    this.nav = h("div", {class: "pager"});
  }

  async load() {
    const cursor = this.cursors[this.cursors.length - 1];
    const data = await this.ctx.api.tasks({...this.query, limit: this.pageSize,
                                           cursor: cursor || ""});
    this.tasks = data.tasks;
    this.next = data.next_cursor;
    this.renderNav();
    return this.tasks;
  }

  renderNav() {
    const page = this.cursors.length;
    replace(this.nav,
      h("button", {"data-nav": "prev-page", disabled: page === 1, onclick: () => {
        this.cursors.pop();
        this.ctx.refreshNow();
      }}, "← Previous"),
      h("span", {class: "hint"}, `page ${page}, ${this.tasks.length} shown`),
      h("button", {"data-nav": "next-page", disabled: !this.next, onclick: () => {
        this.cursors.push(this.next);
        this.ctx.refreshNow();
      }}, "Next →"));
  }
}

export function taskTable(columns, tasks, extraRowClass) {
  return table(columns, tasks, (t) => ({"data-id": t.id, "data-status": t.status,
                                        class: extraRowClass ? extraRowClass(t) : null}));
}
