// Token handling shared by every page: ?token=JWT is taken, stored, and removed from the URL;
// the HTTP API is called with it as a Bearer token.
const KEY = "jr.token";

export function takeTokenFromUrl() {
  const url = new URL(location.href);
  const token = url.searchParams.get("token");
  if (token) {
    sessionStorage.setItem(KEY, token);
    url.searchParams.delete("token");
    history.replaceState(null, "", url.pathname + url.search + url.hash);
  }
  return sessionStorage.getItem(KEY);
}

export function currentToken() {
  return sessionStorage.getItem(KEY);
}

export function setToken(token) {
  sessionStorage.setItem(KEY, token);
}

export function signOut() {
  sessionStorage.removeItem(KEY);
}

// The token's claims, read without verifying (the server verifies): for the expiry and
// the scope the page should show. null when there is no readable token.
export function tokenClaims(token = currentToken()) {
  if (!token) return null;
  try {
    const part = token.split(".")[1].replace(/-/g, "+").replace(/_/g, "/");
    const bytes = Uint8Array.from(atob(part), (c) => c.charCodeAt(0));
    return JSON.parse(new TextDecoder().decode(bytes));
  } catch {
    return null;
  }
}

export function tokenExpired(token = currentToken()) {
  const claims = tokenClaims(token);
  return !claims || (claims.exp && claims.exp * 1000 <= Date.now());
}

export class ApiError extends Error {
  constructor(status, code, message, details) {
    super(message || code);
    this.status = status;
    this.code = code;
    this.details = details || []; // the error body's details (e.g. each problem of a file)
  }
}

async function call(path, options) {
  const token = currentToken();
  const headers = { ...(options.headers || {}) };
  if (options.body !== undefined && typeof options.body === "string" && !headers["Content-Type"]) {
    headers["Content-Type"] = "application/json";
  }
  if (token) headers.Authorization = `Bearer ${token}`;
  let res;
  try {
    res = await fetch(path, { ...options, headers });
  } catch {
    throw new ApiError(0, "network", "the server cannot be reached");
  }
  if (!res.ok) {
    const body = await res.json().catch(() => ({}));
    throw new ApiError(res.status, body?.error?.code || `http_${res.status}`, body?.error?.message || res.statusText, body?.error?.details);
  }
  return res;
}

// JSON in, JSON out. `body` may be an object (sent as JSON) or a Blob (sent as is).
export async function api(path, options = {}) {
  const opts = { ...options };
  if (opts.body !== undefined && !(opts.body instanceof Blob) && typeof opts.body !== "string") {
    opts.body = JSON.stringify(opts.body);
  }
  const res = await call(path, opts);
  return res.status === 204 ? {} : res.json();
}

// A binary resource (a document still) fetched with the token: an object URL.
export async function apiObjectUrl(path) {
  const res = await call(path, {});
  return URL.createObjectURL(await res.blob());
}
