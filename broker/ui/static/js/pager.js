// Previous/next paging over one of the broker's cursors (GET /api/v1/tasks' cursor, the
// schedules' and workflows' after=). The broker only pages forward, so the pager keeps the
// cursor of every page seen so far: "previous" pops one, "next" pushes the page's
// next_cursor. A page costs the same however many items are stored.

import {h, replace} from "./dom.js";

export class CursorPager {
  // fetchPage(cursor) reads one page (cursor null for the first) and returns
  // {items, next, ...}: the page's rows, its next_cursor (empty/null on the last page) and
  // anything else the page wants to keep (it stays in this.page until the next load).
  constructor(ctx, fetchPage, first = null) {
    this.ctx = ctx;
    this.fetchPage = fetchPage;
    this.cursors = [first];
    this.next = null;
    this.items = [];
    this.page = null;
    this.nav = h("div", {class: "pager"});
  }

  // Reads the current page (called on every live refresh) and redraws the buttons.
  async load() {
    const page = await this.fetchPage(this.cursors[this.cursors.length - 1]);
    this.page = page;
    this.items = page.items;
    this.next = page.next;
    this.renderNav();
    return this.items;
  }

  renderNav() {
    const page = this.cursors.length;
    replace(this.nav,
      h("button", {"data-nav": "prev-page", disabled: page === 1, onclick: () => {
        this.cursors.pop();
        this.ctx.refreshNow();
      }}, "← Previous"),
      h("span", {class: "hint"}, `page ${page}, ${this.items.length} shown`),
      h("button", {"data-nav": "next-page", disabled: !this.next, onclick: () => {
        this.cursors.push(this.next);
        this.ctx.refreshNow();
      }}, "Next →"));
  }
}
