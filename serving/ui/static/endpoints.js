// Endpoints: variants and their weights, the rollout in progress and the decisions of the
// last ones, per-variant rate, errors and latency over the last minutes, shadow agreement.
import { api } from "./api.js";
import { badge, COLORS, fixed, h, table, when } from "./dom.js";
import { sparkline } from "./plot.js";
import { every } from "./refresh.js";

const REFRESH_S = 5;

export function render(root, ctx) {
  const reports = new Map(); // shadow reports asked for, kept across refreshes
  return every(REFRESH_S, async () => {
    const { endpoints } = await api("GET", "/v1/console/endpoints");
    root.replaceChildren(
      ...(endpoints.length
        ? endpoints.map((e) => card(e, ctx, reports))
        : [h("p", { class: "empty" }, "No endpoint is applied (mmserve endpoints apply, or MMSERVE_ENDPOINTS).")]),
    );
  }, ctx.notice);
}

function card(endpoint, ctx, reports) {
  return h("section", { class: "card", "data-endpoint": endpoint.name },
    h("h2", {}, endpoint.name, h("span", { class: "sub" }, `${endpoint.mode} · generation ${endpoint.generation}`)),
    weights(endpoint.variants),
    variants(endpoint.variants),
    rollout(endpoint),
    plots(endpoint),
    endpoint.shadow ? shadow(endpoint, ctx, reports) : null,
  );
}

function weights(variants) {
  return h("div", { class: "weights", role: "img", "aria-label": "traffic split" },
    variants.filter((v) => v.share > 0).map((v, i) => h("div", {
      "data-variant": v.name,
      style: `width:${v.share}%;background:${COLORS[i % COLORS.length]}`,
      title: `${v.name}: ${fixed(v.share)}%`,
    }, `${v.name} ${fixed(v.share, 0)}%`)),
  );
}

function variants(list) {
  return table(
    ["variant", "models", "num:weight", "num:share", "num:requests", "num:errors", "num:p50 ms", "num:p99 ms"],
    list.map((v) => [
      v.name, h("code", {}, v.models.join(" → ")), fixed(v.weight, 2), `${fixed(v.share)}%`,
      v.stats?.requests ?? 0, v.stats ? v.stats.server_errors + v.stats.client_errors : 0,
      fixed(v.stats?.latency_ms?.p50, 2), fixed(v.stats?.latency_ms?.p99, 2),
    ]),
  );
}

function rollout(endpoint) {
  const r = endpoint.rollout;
  const history = [...(endpoint.state?.history ?? [])].reverse();
  const parts = [h("h3", {}, "Rollout")];
  if (r) {
    const steps = [];
    for (let i = 1; i <= r.steps; i++) {
      if (i > 1) steps.push(h("div", { class: `link ${i <= r.step ? "done" : ""}` }));
      steps.push(h("div", { class: `step ${i < r.step || (i === r.step && r.share >= 100) ? "done" : i === r.step ? "now" : ""}` }, i));
    }
    parts.push(
      h("p", {}, badge("in progress", "running"), " ", h("code", {}, r.target), ` · ${r.strategy} · step ${r.step} of ${r.steps} · ${fixed(r.share)}% on the new side · since ${when(r.started)}`),
      h("div", { class: "timeline" }, steps),
    );
  } else {
    parts.push(h("p", { class: "sub" }, "No rollout in progress."));
  }
  if (history.length) {
    parts.push(table(["decided", "outcome", "target", "strategy", "guardrail", "num:measured", "num:limit", "reason"],
      history.map((d) => [when(d.at), badge(d.outcome), h("code", {}, d.target), d.strategy, d.guardrail ?? "–",
        fixed(d.measured, 3), fixed(d.limit, 3), d.reason])));
  }
  return h("div", {}, parts);
}

function plots(endpoint) {
  const series = endpoint.history ?? {};
  const names = Object.keys(series);
  if (!names.length) return h("p", { class: "sub" }, "No figures yet: the server samples them every few seconds.");
  return h("div", {}, h("h3", {}, "Last minutes, per variant"),
    names.map((name, i) => {
      const points = series[name];
      const of = (field, scale = 1) => points.map((p) => ({ t: p.t, value: p[field] === null ? null : p[field] * scale }));
      const color = COLORS[endpoint.variants.findIndex((v) => v.name === name) % COLORS.length] ?? COLORS[i];
      return h("div", { "data-plots": name },
        h("div", { class: "sub" }, name),
        h("div", { class: "plots" },
          sparkline("requests/s", of("rps"), { digits: 2, color }),
          sparkline("errors", of("error_rate", 100), { unit: "%", color }),
          sparkline("p50", of("p50_ms"), { unit: " ms", digits: 2, color }),
          sparkline("p99", of("p99_ms"), { unit: " ms", digits: 2, color }),
        ));
    }));
}

function shadow(endpoint, ctx, reports) {
  const box = h("div", {}, h("h3", {}, `Shadow: ${endpoint.shadow}`));
  if (!ctx.admin) {
    box.append(h("p", { class: "sub" }, "The shadow report reads the whole capture: it needs the admin token."));
    return box;
  }
  const report = reports.get(endpoint.name);
  const ask = async () => {
    try {
      reports.set(endpoint.name, await api("GET", `/v1/endpoints/${endpoint.name}/compare`));
      box.replaceWith(shadow(endpoint, ctx, reports));
    } catch (err) {
      ctx.notice(err.message);
    }
  };
  box.append(h("div", { class: "actions" }, h("button", { onclick: ask }, report ? "Compare again" : "Compare primary and shadow")));
  if (report) {
    const agree = report.agreement === null ? "n/a" : `${(report.agreement * 100).toFixed(2)}%`;
    box.append(
      h("p", { "data-agreement": agree }, `${report.pairs} rows answered by both; labels agree `, h("strong", {}, agree)),
      table(["side", "models", "num:requests", "num:errors", "num:p50 ms", "num:p99 ms"],
        ["primary", "shadow"].map((side) => {
          const s = report[side];
          return [side, s.models.join(", "), s.requests, s.errors, fixed(s.latency_ms.p50, 2), fixed(s.latency_ms.p99, 2)];
        })),
      Object.keys(report.deltas).length
        ? table(["output", "num:mean |Δ|", "num:max |Δ|"], Object.entries(report.deltas).map(([c, d]) => [c, d.mean_abs.toPrecision(4), d.max_abs.toPrecision(4)]))
        : null,
    );
  }
  return box;
}
