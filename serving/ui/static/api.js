// The server's JSON routes, with the token the console was given (kept for the session only).

const KEY = "mmserve.token";

export class ApiError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

export function token() {
  return sessionStorage.getItem(KEY);
}

export function setToken(value) {
  if (value) sessionStorage.setItem(KEY, value);
  else sessionStorage.removeItem(KEY);
}

function headers(extra = {}) {
  const given = token();
  return given ? { ...extra, authorization: `Bearer ${given}` } : extra;
}

/** The JSON answer of METHOD PATH, or an ApiError with the server's {"error": message}. */
export async function api(method, path, body) {
  const init = { method, headers: headers(body === undefined ? {} : { "content-type": "application/json" }) };
  if (body !== undefined) init.body = JSON.stringify(body);
  const response = await fetch(path, init);
  const data = await response.json().catch(() => null);
  if (!response.ok) throw new ApiError(response.status, data?.error ?? response.statusText);
  return data;
}

/** Download PATH (a job's result) with the token: a link alone could not send it. */
export async function download(path, name) {
  const response = await fetch(path, { headers: headers() });
  if (!response.ok) {
    const data = await response.json().catch(() => null);
    throw new ApiError(response.status, data?.error ?? response.statusText);
  }
  const url = URL.createObjectURL(await response.blob());
  const a = Object.assign(document.createElement("a"), { href: url, download: name });
  a.click();
  setTimeout(() => URL.revokeObjectURL(url), 1000);
}
