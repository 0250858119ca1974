// Failed and dead: tasks out of attempts (dead), waiting to retry (failed) or cancelled;
// requeue or cancel one, a selection, or every task matching the filter.

import {h, replace, makeHash} from "../dom.js";
import {COLUMNS, TaskPager, taskTable} from "../tasklist.js";

const TABS = [["dead", "Dead"], ["failed", "Retrying"], ["cancelled", "Cancelled"]];
// What each status allows (broker/machine.py): requeue takes dead or cancelled tasks back to
// pending; cancel stops one that is not finished.
const ACTIONS = {dead: ["requeue"], cancelled: ["requeue"], failed: ["cancel"]};
const BULK_LIMIT = 10000;  // one click never walks more than this many tasks

export default {
  id: "failed",
  title: "Failed / dead",
  mount(root, ctx, params) {
    const status = ACTIONS[params.status] ? params.status : "dead";
    const query = {status, queue: params.queue || "", type: params.type || ""};
    const actions = ctx.can("cancel_tasks") ? ACTIONS[status] : [];
    const selected = new Set();
    let armed = null;
    const pager = new TaskPager(ctx, query);
    const list = h("div", {});
    const bulk = h("div", {class: "actions"});
    const progress = h("span", {class: "hint", "data-testid": "bulk-progress"});
    const queueInput = h("input", {name: "queue", placeholder: "queue", value: query.queue});
    const typeInput = h("input", {name: "type", placeholder: "type", value: query.type});

    const run = (verb, id) => verb === "requeue" ? ctx.api.requeue(id) : ctx.api.cancel(id);
    const runMany = async (verb, ids) => {
      let done = 0, failed = 0;
      for (const id of ids) {
        try { await run(verb, id); done++; } catch (err) { failed++; }
        replace(progress, `${verb}: ${done} done${failed ? `, ${failed} refused` : ""}`);
      }
      return {done, failed};
    };
    const allMatching = async (verb) => {
      // Walk the filter's pages from the start; tasks we act on leave this status's index,
      // and the cursor (a key) carries on from where the last page ended.
      let cursor = "", done = 0, failed = 0, seen = 0;
      do {
        const page = await ctx.api.tasks({...query, limit: 500, cursor});
        const ids = page.tasks.map((t) => t.id).slice(0, BULK_LIMIT - seen);
        seen += ids.length;
        const r = await runMany(verb, ids);
        done += r.done; failed += r.failed;
        cursor = page.next_cursor;
      } while (cursor && seen < BULK_LIMIT);
      replace(progress, `${verb}: ${done} done${failed ? `, ${failed} refused` : ""}` +
        (cursor ? ` (stopped after ${BULK_LIMIT}; click again for more)` : ""));
    };

    root.append(
      h("nav", {class: "tabs"}, TABS.map(([st, label]) =>
        h("a", {href: makeHash("failed", {...query, status: st}),
                class: st === status ? "active" : null, "data-tab": st}, label))),
      h("section", {class: "panel toolbar"},
        h("form", {class: "filters", onsubmit: (ev) => {
          ev.preventDefault();
          ctx.go(makeHash("failed", {status, queue: queueInput.value.trim(),
                                     type: typeInput.value.trim()}));
        }}, queueInput, typeInput, h("button", {type: "submit"}, "Filter")),
        bulk, progress),
      h("section", {class: "panel"}, list, pager.nav));

    return async () => {
      const tasks = await pager.load();
      const c = COLUMNS;
      const columns = [c.id, c.type, c.queue, c.attempts, c.error, c.updated];
      if (status === "failed") columns.push(c.runAt);
      if (actions.length) {
        columns.unshift({title: "", cell: (t) => h("input", {
          type: "checkbox", "data-select": t.id, checked: selected.has(t.id),
          onchange: (ev) => {
            if (ev.target.checked) selected.add(t.id); else selected.delete(t.id);
            renderBulk();
          }})});
        columns.push({title: "", cell: (t) => actions.map((verb) =>
          h("button", {"data-action": verb, class: verb === "cancel" ? "danger" : null,
                       onclick: () => ctx.act(`${verb} ${t.id}`, () => run(verb, t.id))},
            verb === "requeue" ? "Requeue" : "Cancel"))});
      }
      const visible = new Set(tasks.map((t) => t.id));
      for (const id of selected) if (!visible.has(id)) selected.delete(id);
      list.replaceChildren(taskTable(columns, tasks));
      renderBulk();
    };

    function renderBulk() {
      replace(bulk, actions.flatMap((verb) => {
        const label = verb === "requeue" ? "Requeue" : "Cancel";
        return [
          h("button", {"data-action": `${verb}-selected`, disabled: selected.size === 0,
                       onclick: () => ctx.act(`${verb} ${selected.size} selected`, async () => {
                         await runMany(verb, [...selected]);
                         selected.clear();
                       })}, `${label} selected (${selected.size})`),
          // Two clicks: the first arms the button for a few seconds, the second acts.
          h("button", {"data-action": `${verb}-all`, class: armed === verb ? "danger" : "warn",
                       onclick: () => {
                         if (armed !== verb) {
                           armed = verb;
                           setTimeout(() => { armed = null; renderBulk(); }, 5000);
                           renderBulk();
                           return;
                         }
                         armed = null;
                         ctx.act(`${verb} all matching`, () => allMatching(verb));
                       }},
            armed === verb ? `Click again: ${verb} every ${status} task matching` :
              `${label} all matching`),
        ];
      }));
    }
  },
};
