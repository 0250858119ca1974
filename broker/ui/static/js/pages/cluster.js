// Cluster: every node as this one sees it: role, term, commit and applied index, lag,
// reachability, caught-up and restore identity; leadership transfer (admin, clusters).

import {h, replace, table, fmtNumber, badge} from "../dom.js";

function restored(r) {
  if (!r) return "—";
  return h("span", {class: "mono", title: JSON.stringify(r)},
    `${String(r.backup_sha256 || "").slice(0, 12)} @ ${fmtNumber(r.backup_applied_index)}`);
}

export default {
  id: "cluster",
  title: "Cluster",
  mount(root, ctx) {
    const summary = h("section", {class: "panel"});
    const nodes = h("section", {class: "panel"});
    root.append(summary, nodes);
    return async () => {
      const c = await ctx.api.cluster();
      const leader = c.nodes.find((n) => n.node_id === c.leader_id);
      replace(summary,
        h("div", {class: "cards"},
          h("div", {class: "card"}, h("div", {class: "card-value"}, c.mode),
            h("div", {class: "card-label"}, "mode")),
          h("div", {class: "card", "data-testid": "cluster-leader"},
            h("div", {class: "card-value"}, leader ? leader.node_id : "none"),
            h("div", {class: "card-label"}, `leader ${c.leader || ""}`)),
          h("div", {class: "card", "data-testid": "cluster-term"},
            h("div", {class: "card-value"}, fmtNumber(c.term)),
            h("div", {class: "card-label"}, "term")),
          h("div", {class: "card"}, h("div", {class: "card-value"}, c.node_id),
            h("div", {class: "card-label"}, `answered by (${c.role})`)),
          h("div", {class: "card"},
            h("div", {class: "card-value"}, c.caught_up ? badge("yes", "ok") : badge("no", "bad")),
            h("div", {class: "card-label"}, "this node caught up"))),
        c.restore_mismatch ? h("p", {class: "alert"}, "Restore mismatch: the reachable " +
          "nodes were restored from different backups (or some were not restored).") : null,
        ctx.can("admin") && c.mode === "raft" ? h("div", {class: "actions"},
          h("button", {"data-action": "transfer-leader", class: "warn", onclick: () =>
            ctx.act("transfer leadership", async () => {
              const r = await ctx.api.transferLeader();
              if (!r.transferred) throw new Error(`${r.previous_leader} still leads; retry`);
              ctx.toast(`leader: ${r.previous_leader} → ${r.leader} (term ${r.term})`, "ok");
            })}, "Transfer leadership")) : null,
        h("p", {class: "hint"}, "Followers answer reads from their own copy and forward " +
          "writes to the leader. Transfer leadership (admin) hands it to the most caught-up " +
          "follower, e.g. before restarting the leader's machine."));
      replace(nodes, h("h2", {}, "Nodes"), table([
        {title: "node", cell: (n) => h("span", {"data-testid": "node-id"}, n.node_id)},
        {title: "address", cell: (n) => n.address},
        {title: "role", cell: (n) => h("span", {"data-testid": "node-role"},
          badge(n.role, n.role === "leader" ? "ok" : n.role === "follower" ? "info" : "bad"))},
        {title: "term", class: "num", cell: (n) => fmtNumber(n.term)},
        {title: "commit", class: "num", cell: (n) => fmtNumber(n.commit_index)},
        {title: "applied", class: "num", cell: (n) => fmtNumber(n.applied_index)},
        {title: "lag", class: "num", cell: (n) => fmtNumber(n.lag)},
        {title: "reachable", cell: (n) => n.reachable ? badge("yes", "ok") : badge("no", "bad")},
        {title: "restored from", cell: (n) => restored(n.restored)},
      ], c.nodes, (n) => ({"data-node": n.node_id, "data-role": n.role,
                           class: n.node_id === c.leader_id ? "leader-row" : null})));
    };
  },
};
