// The console's shell: the token, the session (which credential it is), and the pages.
import { api, setToken, token } from "./api.js";
import * as endpoints from "./endpoints.js";
import * as jobs from "./jobs.js";
import * as models from "./models.js";
import * as streams from "./streams.js";

const PAGES = { models, endpoints, jobs, streams };
const root = document.getElementById("page");
let stop = null; // the shown page's cleanup (its refresh timer)

/** Which credential the token is, and whether the server wants one. */
async function session() {
  return api("GET", "/v1/console/session");
}

export function notice(message, kind = "error") {
  const el = document.getElementById("notice");
  el.hidden = !message;
  el.textContent = message || "";
  el.className = kind;
}

async function show() {
  const asked = location.hash.replace(/^#\//, "");
  const name = Object.hasOwn(PAGES, asked) ? asked : "models"; // not "#/constructor"
  const page = PAGES[name];
  for (const link of document.querySelectorAll("nav a")) {
    link.classList.toggle("active", link.dataset.page === name);
  }
  if (stop) stop();
  stop = null;
  root.replaceChildren();
  notice("");
  let current;
  try {
    current = await session();
  } catch (err) {
    notice(`cannot reach the server: ${err.message}`);
    return;
  }
  const label = document.getElementById("session");
  const given = token() !== null;
  label.textContent = current.credential === "none" ? (given ? "unknown token" : "no token") : current.credential;
  label.className = `badge ${current.credential === "none" && given ? "unknown" : current.credential}`;
  if (current.credential === "none" && current.api_key) {
    notice(given
      ? "That token is neither this server's API key nor its admin token: enter another above."
      : "This server needs its API key (or the admin token): enter it above.", "info");
    return;
  }
  document.title = `mmserve · ${name}`;
  stop = page.render(root, { admin: current.credential === "admin", management: current.management, notice });
}

document.getElementById("token-form").addEventListener("submit", (event) => {
  event.preventDefault();
  const input = document.getElementById("token");
  setToken(input.value.trim());
  input.value = ""; // never left on screen
  show();
});
document.getElementById("forget").addEventListener("click", () => {
  setToken(null);
  show();
});
window.addEventListener("hashchange", show);
document.getElementById("token").placeholder = token() ? "token kept for this session" : "API key or admin token";
show();
