// Scheduled: delayed tasks in the order they will run (the broker's schedule index is
// sorted by run time).

import {h, fmtTime} from "../dom.js";
import {COLUMNS, TaskPager, taskTable} from "../tasklist.js";

export default {
  id: "scheduled",
  title: "Scheduled",
  mount(root, ctx) {
    const pager = new TaskPager(ctx, {status: "scheduled"});
    const list = h("div", {});
    root.append(h("section", {class: "panel"},
      h("p", {class: "hint"}, "Tasks submitted with run_at or delay_secs, soonest first. " +
        "Tasks waiting to retry are on the Failed / dead page."), list, pager.nav));
    return async () => {
      const tasks = await pager.load();
      const c = COLUMNS;
      const columns = [c.id, c.type, c.queue, c.priority, c.runAt,
        {title: "run at", cell: (t) => h("span", {class: "mono"}, fmtTime(t.run_at))}];
      if (ctx.can("cancel_tasks")) {
        columns.push({title: "", cell: (t) => h("button", {"data-action": "cancel",
          class: "danger", onclick: () => ctx.act(`cancel ${t.id}`, () => ctx.api.cancel(t.id))},
          "Cancel")});
      }
      list.replaceChildren(taskTable(columns, tasks));
    };
  },
};
