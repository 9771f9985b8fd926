// Jobs (recent, by status, with their results) and batch runs (parts done of all, rows/s,
// rejects), refreshed live. Listing them needs the admin token.
import { api, download } from "./api.js";
import { badge, fixed, h, table, when } from "./dom.js";
import { adminOnly, every } from "./refresh.js";

const REFRESH_S = 3;
const STATUSES = ["all", "queued", "running", "succeeded", "failed", "cancelled"];

export function render(root, ctx) {
  if (!ctx.admin) {
    root.replaceChildren(h("p", { class: "empty" }, adminOnly(ctx, "Listing jobs and batch runs")));
    return null;
  }
  let wanted = "all";
  const filter = h("select", { name: "status", onchange: () => { wanted = filter.value; } },
    STATUSES.map((s) => h("option", { value: s }, s)));
  return every(REFRESH_S, async () => {
    const [jobs, batch] = await Promise.all([api("GET", "/v1/jobs"), api("GET", "/v1/batch-jobs")]);
    root.replaceChildren(jobsCard(jobs, filter, wanted, ctx), runsCard(batch.runs));
  }, ctx.notice);
}

function jobsCard({ jobs, counts }, filter, wanted, ctx) {
  const shown = jobs.filter((j) => wanted === "all" || j.status === wanted);
  return h("section", { class: "card", id: "jobs" },
    h("h2", {}, "Async jobs", h("span", { class: "sub" }, "open ones, and those this server heard finish"),
      h("span", { class: "chips" }, Object.entries(counts).sort().map(([s, n]) => badge(`${s} ${n}`, s)))),
    h("div", { class: "actions" }, "Status ", filter),
    shown.length
      ? table(["job", "model", "status", "created", "finished", "num:attempts", "result / error"],
        shown.map((j) => [h("code", { title: j.id }, j.id.slice(0, 10)), h("code", {}, j.model), badge(j.status),
          when(j.created_at), when(j.finished_at), j.attempts, outcome(j, ctx)]))
      : h("p", { class: "empty" }, "No job to show."),
  );
}

function outcome(job, ctx) {
  if (job.result) {
    const fetchIt = (event) => {
      event.preventDefault();
      download(job.result, `${job.id}.result`).catch((err) => ctx.notice(err.message));
    };
    return h("a", { class: "result", href: job.result, onclick: fetchIt }, "result");
  }
  return job.error ? h("span", { class: "error" }, `${job.error.type}: ${job.error.message}`) : "–";
}

function runsCard(runs) {
  return h("section", { class: "card", id: "batch" },
    h("h2", {}, "Batch runs", h("span", { class: "sub" }, "newest first")),
    runs.length
      ? table(["run", "model", "status", "parts", "num:rows", "num:rows/s", "num:rejected", "started", "output"],
        runs.map((r) => [h("code", {}, r.run_id), h("code", {}, r.model ?? "–"), badge(r.status), progress(r),
          r.rows ?? "–", r.rows_per_s ?? "–", r.rejected ?? "–", when(r.started),
          r.error ? h("span", { class: "error" }, r.error.message) : h("code", {}, r.output ?? "–")]))
      : h("p", { class: "empty" }, "No batch run yet."),
  );
}

function progress(run) {
  if (run.parts === null || run.parts === undefined) return `${run.parts_done ?? 0} done`;
  const share = run.parts ? (100 * run.parts_done) / run.parts : 100;
  return h("div", {}, `${run.parts_done} of ${run.parts}`,
    h("div", { class: "progress", title: `${fixed(share)}%` }, h("div", { style: `width:${share}%` })));
}
