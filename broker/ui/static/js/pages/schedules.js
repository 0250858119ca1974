// Schedules: cron and interval schedules with their next fire time and last fired slot, a
// page of 50 at a time (the broker's id cursor); pause, resume and "run now" for an admin key
// (the REST API's /api/v1/schedules, which needs admin for every change).

import {h, replace, table, fmtTime, fmtAgo, fmtNumber, badge, shortId} from "../dom.js";
import {CursorPager} from "../pager.js";

const PAGE = 50;

function when(secs) {
  if (secs === null || secs === undefined) return "—";
  return h("span", {title: fmtTime(secs)}, fmtAgo(secs));
}

function rule(s) {
  if (s.cron) return h("span", {class: "mono"}, `${s.cron}`, h("span", {class: "hint"}, ` ${s.tz}`));
  return h("span", {class: "mono"}, `every ${fmtNumber(s.interval_secs)} s`);
}

export default {
  id: "schedules",
  title: "Schedules",
  mount(root, ctx) {
    const summary = h("div", {class: "cards"});
    const list = h("div", {});
    const pager = new CursorPager(ctx, async (cursor) => {
      const data = await ctx.api.schedules({after: cursor || "", limit: PAGE});
      return {items: data.schedules, next: data.next_cursor, data};
    });
    root.append(summary, h("section", {class: "panel"},
      h("p", {class: "hint"}, "Each slot of a schedule is enqueued exactly once by the leader " +
        "(its task id is keyed by the slot). Run now enqueues one extra task and leaves the " +
        "slots alone. Define schedules with the API, tq-admin schedules or schedules.list " +
        "in the configuration."), list, pager.nav));

    return async () => {
      await pager.load();
      const data = pager.page.data;
      const counts = data.counts || {};
      replace(summary,
        h("div", {class: "card", "data-testid": "schedules-total"},
          h("div", {class: "card-value"}, fmtNumber(counts.total || 0)),
          h("div", {class: "card-label"}, "schedules")),
        h("div", {class: "card"}, h("div", {class: "card-value"}, fmtNumber(counts.paused || 0)),
          h("div", {class: "card-label"}, "paused")));
      const columns = [
        {title: "id", cell: (s) => h("span", {class: "mono"}, s.id)},
        {title: "rule", cell: rule},
        {title: "task", cell: (s) => `${s.task.type} → ${s.task.queue || "default"}`},
        {title: "state", cell: (s) => h("span", {"data-testid": "schedule-state"},
          badge(s.state, s.state === "active" ? "ok" : s.state === "paused" ? "warn" : "info"))},
        {title: "next fire", cell: (s) => h("span", {"data-testid": "next-fire"},
          when(s.next_fire_at))},
        {title: "last slot", cell: (s) => h("span", {"data-testid": "last-slot"},
          when(s.last_slot_at))},
        {title: "last task", cell: (s) => s.last_task_id
          ? h("a", {href: `#/task/${encodeURIComponent(s.last_task_id)}`, class: "mono",
                    title: s.last_task_id}, shortId(s.last_task_id)) : "—"},
        {title: "fired", class: "num", cell: (s) => h("span", {"data-testid": "fired"},
          fmtNumber(s.fired))},
        {title: "misfires", class: "num", cell: (s) => fmtNumber(s.misfires)},
        {title: "misfire", cell: (s) => s.misfire},
        {title: "last error", class: "clip", cell: (s) => s.last_error || "—"},
      ];
      if (ctx.can("admin")) {
        columns.push({title: "", cell: (s) => [
          s.paused
            ? h("button", {"data-action": "resume", onclick: () =>
                ctx.act(`resume ${s.id}`, () => ctx.api.scheduleResume(s.id))}, "Resume")
            : h("button", {"data-action": "pause", class: "warn", onclick: () =>
                ctx.act(`pause ${s.id}`, () => ctx.api.schedulePause(s.id))}, "Pause"),
          h("button", {"data-action": "run", onclick: () =>
            ctx.act(`run ${s.id}`, () => ctx.api.scheduleRun(s.id))}, "Run now")]});
      }
      replace(list, table(columns, data.schedules, (s) => ({"data-schedule": s.id,
                                                             "data-state": s.state})));
    };
  },
};
