// A page of tasks from GET /api/v1/tasks with cursor pagination, shared by the Tasks,
// Failed and Scheduled pages. The cursor is the broker's (a key in its index): a page costs
// the same with a million tasks stored as with ten.

import {h, table, fmtAgo, badge, shortId} from "./dom.js";
import {CursorPager} from "./pager.js";

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

// A CursorPager over GET /api/v1/tasks with a fixed filter (query: queue, status, type).
export class TaskPager extends CursorPager {
  constructor(ctx, query, pageSize = 50) {
    super(ctx, async (cursor) => {
      const data = await ctx.api.tasks({...query, limit: pageSize, cursor: cursor || ""});
      return {items: data.tasks, next: data.next_cursor};
    });
  }
}

export function taskTable(columns, tasks, extraRowClass) {
  return table(columns, tasks, (t) => ({"data-id": t.id, "data-status": t.status,
                                        class: extraRowClass ? extraRowClass(t) : null}));
}
