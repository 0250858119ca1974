// Tasks: every task, filtered by queue, status and type; open one by id.

import {h, makeHash} from "../dom.js";
import {COLUMNS, STATUSES, TaskPager, taskTable} from "../tasklist.js";

export default {
  id: "tasks",
  title: "Tasks",
  mount(root, ctx, params) {
    const query = {queue: params.queue || "", status: params.status || "",
                   type: params.type || ""};
    const queueSelect = h("select", {name: "queue", "data-testid": "filter-queue"},
                          h("option", {value: ""}, "any queue"));
    if (query.queue) queueSelect.append(h("option", {value: query.queue}, query.queue));
    queueSelect.value = query.queue;
    const statusSelect = h("select", {name: "status", "data-testid": "filter-status"},
      h("option", {value: ""}, "any status"),
      STATUSES.map((st) => h("option", {value: st}, st)));
    statusSelect.value = query.status;
    const typeInput = h("input", {name: "type", placeholder: "type", value: query.type,
                                  "data-testid": "filter-type"});
    const idInput = h("input", {name: "id", placeholder: "task id", class: "mono",
                                "data-testid": "search-id"});
    const apply = (ev) => {
      ev.preventDefault();
      ctx.go(makeHash("tasks", {queue: queueSelect.value, status: statusSelect.value,
                                type: typeInput.value.trim()}));
    };
    const open = (ev) => {
      ev.preventDefault();
      const id = idInput.value.trim();
      if (id) ctx.go(`#/task/${encodeURIComponent(id)}`);
    };
    const pager = new TaskPager(ctx, query);
    const list = h("div", {});
    root.append(
      h("section", {class: "panel toolbar"},
        h("form", {class: "filters", onsubmit: apply}, queueSelect, statusSelect, typeInput,
          h("button", {type: "submit", "data-nav": "apply-filter"}, "Filter")),
        h("form", {class: "filters", onsubmit: open}, idInput,
          h("button", {type: "submit", "data-nav": "open-id"}, "Open"))),
      h("section", {class: "panel"}, list, pager.nav));

    let knownQueues = "";
    return async () => {
      const [tasks, queues] = await Promise.all([pager.load(), ctx.api.queues()]);
      const names = Object.keys(queues.queues);
      if (names.join("\n") !== knownQueues) {  // rebuilt only when it changed: keeps focus
        knownQueues = names.join("\n");
        const chosen = queueSelect.value;
        // replaceChildren takes nodes one by one (an array would become its text)
        queueSelect.replaceChildren(h("option", {value: ""}, "any queue"),
          ...[...new Set([...names, query.queue].filter(Boolean))]
            .map((n) => h("option", {value: n}, n)));
        queueSelect.value = chosen;
      }
      const c = COLUMNS;
      list.replaceChildren(taskTable(
        [c.id, c.type, c.queue, c.status, c.priority, c.attempts, c.worker, c.created,
         c.updated], tasks));
    };
  },
};
