// Token handling shared by every page: ?token=JWT is taken, stored, and removed from the URL.
export function takeTokenFromUrl() {
  const url = new URL(location.href);
  const token = url.searchParams.get("token");
  if (token) {
    sessionStorage.setItem("jr.token", token);
    url.searchParams.delete("token");
    history.replaceState(null, "", url.pathname + url.search + url.hash);
  }
  return sessionStorage.getItem("jr.token");
}

export function signOut() {
  sessionStorage.removeItem("jr.token");
}

export async function api(path, options = {}) {
  const token = sessionStorage.getItem("jr.token");
  const headers = { "Content-Type": "application/json", ...(options.headers || {}) };
  if (token) headers.Authorization = `Bearer ${token}`;
  const res = await fetch(path, { ...options, headers });
  const body = await res.json().catch(() => ({}));
  if (!res.ok) {
    const err = new Error(body?.error?.message || res.statusText);
    err.code = body?.error?.code;
    err.status = res.status;
    throw err;
  }
  return body;
}
