// The management API, with the logged-in user's basic-auth credentials.
//
// credentials: 'omit' keeps the browser out of it: it never shows its own password prompt for a 401 and
// never caches the credentials; the Authorization header is set here, from sessionStorage, which the
// browser forgets when the tab closes.

const KEY = 'mailslot.auth';

export class ApiError extends Error {
  constructor(status, error, reason) {
    super(reason || error || `HTTP ${status}`);
    this.status = status;
    this.error = error;
  }
}

let onUnauthenticated = () => {};

export function setUnauthenticatedHandler(handler) {
  onUnauthenticated = handler;
}

export function credentials() {
  return sessionStorage.getItem(KEY);
}

export function storeCredentials(username, password) {
  // btoa needs Latin-1: encode UTF-8 first so any user name or password can log in.
  const raw = new TextEncoder().encode(`${username}:${password}`);
  sessionStorage.setItem(KEY, btoa(String.fromCharCode(...raw)));
}

export function forgetCredentials() {
  sessionStorage.removeItem(KEY);
}

// One path segment: a vhost "/" is "%2F", a name with "#" or "?" stays one segment.
export const enc = encodeURIComponent;

export function query(params) {
  const search = new URLSearchParams();
  for (const [key, value] of Object.entries(params)) {
    if (value !== undefined && value !== null && value !== '') search.set(key, String(value));
  }
  const text = search.toString();
  return text ? `?${text}` : '';
}

export async function request(method, path, body, {signal, raw = false, auth = credentials(), headers: extra = {}} = {}) {
  const headers = {...extra};
  if (auth) headers.Authorization = `Basic ${auth}`;
  if (body !== undefined) headers['Content-Type'] = 'application/json';
  const response = await fetch(`/api${path}`, {
    method,
    headers,
    body: body === undefined ? undefined : JSON.stringify(body),
    credentials: 'omit',
    cache: 'no-store',
    signal,
  });
  if (!response.ok) {
    let error = '';
    let reason = '';
    try {
      const doc = await response.json();
      error = doc.error || '';
      reason = typeof doc.reason === 'string' ? doc.reason : JSON.stringify(doc.reason);
    } catch {
      // an empty body (a bare 401 challenge, a 405)
    }
    if (response.status === 401 && error === 'not_authorized') onUnauthenticated();
    throw new ApiError(response.status, error, reason || response.statusText);
  }
  if (raw) return response;
  if (response.status === 204 || response.headers.get('Content-Length') === '0') return null;
  const text = await response.text();
  return text ? JSON.parse(text) : null;
}

export const api = {
  get: (path, options) => request('GET', path, undefined, options),
  put: (path, body, options) => request('PUT', path, body ?? {}, options),
  post: (path, body, options) => request('POST', path, body ?? {}, options),
  del: (path, options) => request('DELETE', path, undefined, options),
};
