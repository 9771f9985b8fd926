// Models: versions, runtime, aliases, approval, schema, sha256, created; with the admin
// token, approve/reject a version and move an alias.
import { api } from "./api.js";
import { badge, h, table, when } from "./dom.js";

export function render(root, ctx) {
  const draw = async () => {
    const { models } = await api("GET", "/v1/console/models");
    root.replaceChildren(
      ...(models.length ? models.map((m) => card(m, ctx, draw)) : [h("p", { class: "empty" }, "No model is registered.")]),
    );
  };
  draw().catch((err) => ctx.notice(err.message));
  return null;
}

function card(model, ctx, redraw) {
  if (model.error) {
    return h("section", { class: "card", "data-model": model.name },
      h("h2", {}, model.name), h("p", { class: "error" }, `cannot be read: ${model.error}`));
  }
  const aliases = Object.entries(model.aliases).sort();
  const aliased = (v) => aliases.filter(([, target]) => target === v).map(([a]) => a);
  const rows = model.versions.map((v) => [
    h("strong", {}, `v${v.version}`),
    v.runtime,
    badge(v.approval),
    h("div", { class: "chips" }, aliased(v.version).map((a) => badge(`@${a}`, "alias"))),
    h("div", { class: "schema" }, v.inputs.map((f) => h("span", {}, h("code", {}, f.name), " ", h("span", { class: "sub" }, f.dtype + (f.nullable ? "?" : ""))))),
    h("code", {}, v.outputs.join(", ")),
    h("code", { title: v.sha256 }, v.sha256.slice(0, 12)),
    when(v.created),
    ...(ctx.admin ? [approval(model.name, v, ctx, redraw)] : []),
  ]);
  const headers = ["version", "runtime", "approval", "aliases", "input schema", "outputs", "sha256", "created"];
  return h("section", { class: "card", "data-model": model.name },
    h("h2", {}, model.name,
      h("span", { class: "sub" }, `${model.versions.length} version(s)`),
      h("span", { class: "chips" }, aliases.map(([a, v]) => badge(`@${a} → v${v}`, "alias")))),
    table(ctx.admin ? [...headers, "actions"] : headers, rows),
    ctx.admin ? aliasForm(model, ctx, redraw) : h("p", { class: "sub" }, "Read-only: actions need the admin token."),
  );
}

function approval(name, v, ctx, redraw) {
  const set = (value) => act(ctx, redraw, () =>
    api("PUT", `/v1/models/${name}/versions/${v.version}/approval`, { approval: value }));
  return h("div", { class: "actions" },
    h("button", { onclick: () => set("approved"), disabled: v.approval === "approved" }, "Approve"),
    h("button", { onclick: () => set("rejected"), disabled: v.approval === "rejected" }, "Reject"),
  );
}

function aliasForm(model, ctx, redraw) {
  const alias = h("input", { name: "alias", list: `aliases-${model.name}`, placeholder: "alias", size: 12, value: Object.keys(model.aliases)[0] ?? "" });
  const version = h("select", { name: "version" }, model.versions.map((v) => h("option", { value: v.version }, `v${v.version}`)));
  const force = h("input", { type: "checkbox", name: "force" });
  const move = () => act(ctx, redraw, () =>
    api("PUT", `/v1/models/${model.name}/aliases/${encodeURIComponent(alias.value.trim())}`, {
      version: Number(version.value), force: force.checked,
    }));
  return h("div", { class: "actions" },
    h("datalist", { id: `aliases-${model.name}` }, Object.keys(model.aliases).map((a) => h("option", { value: a }))),
    "Point alias ", alias, " at ", version,
    h("label", {}, force, " force"),
    h("button", { class: "primary", onclick: move }, "Move alias"),
  );
}

async function act(ctx, redraw, call) {
  try {
    await call();
    ctx.notice("");
    await redraw();
  } catch (err) {
    ctx.notice(err.message);
  }
}
