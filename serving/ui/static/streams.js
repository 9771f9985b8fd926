// Streams: Redis streams with their consumer groups' lag and pending entries, and the
// dead-letter streams' counts. Listing them needs the admin token.
import { api } from "./api.js";
import { h, table } from "./dom.js";
import { adminOnly, every } from "./refresh.js";

const REFRESH_S = 5;

export function render(root, ctx) {
  if (!ctx.admin) {
    root.replaceChildren(h("p", { class: "empty" }, adminOnly(ctx, "Listing streams")));
    return null;
  }
  return every(REFRESH_S, async () => {
    const answer = await api("GET", "/v1/streams");
    if (!answer.redis) {
      root.replaceChildren(h("p", { class: "empty" }, "No Redis is configured (MMSERVE_REDIS_URL or MMSERVE_BROKER_URL)."));
      return;
    }
    const dead = answer.streams.filter((s) => s.dead_letters);
    const live = answer.streams.filter((s) => !s.dead_letters);
    const groups = live.flatMap((s) => s.groups.map((g) => [h("code", {}, s.name), s.length, h("code", {}, g.name),
      g.consumers, g.pending, g.lag ?? "–", h("code", {}, g.last_delivered_id)]));
    root.replaceChildren(
      ...(answer.complete ? [] : [h("p", { class: "sub", id: "partial" },
        "Redis holds more keys than one listing looks at (10,000): streams beyond them are not shown.")]),
      h("section", { class: "card", id: "groups" }, h("h2", {}, "Consumer groups"),
        groups.length
          ? table(["stream", "num:length", "group", "num:consumers", "num:pending", "num:lag", "last delivered"], groups)
          : h("p", { class: "empty" }, "No stream has a consumer group.")),
      h("section", { class: "card", id: "dead-letters" }, h("h2", {}, "Dead letters"),
        dead.length
          ? table(["stream", "num:dead letters", "newest", "error", "reason"], dead.map((s) => [
            h("code", {}, s.name), s.length, h("code", {}, s.latest?.id ?? "–"), s.latest?.error ?? "–", s.latest?.reason ?? "–"]))
          : h("p", { class: "empty" }, "No dead-letter stream.")),
    );
  }, ctx.notice);
}
