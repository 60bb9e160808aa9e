// The public API of bizzyd, with the signed-in user's ID token. Errors become
// ApiError: `offline` when bizzyd cannot be reached, `notAvailable` for an endpoint
// this server does not have (a 404 "no such endpoint"), `expired` when the session
// cannot be renewed.

export class ApiError extends Error {
  constructor(message, { status = 0, path = "", problem = null } = {}) {
    super(message);
    this.status = status;
    this.path = path;
    this.problem = problem;
    this.offline = status === 0;
    this.notAvailable = status === 404 && problem?.detail === "no such endpoint";
    this.expired = status === 401;
    this.param = problem?.invalid_params?.[0]?.name ?? null;
  }
}

export function createApi({ token, onExpired, onOffline }) {
  async function send(method, path, body, fresh) {
    const headers = { Accept: "application/json" };
    const t = await token(fresh);
    if (t) headers.Authorization = `Bearer ${t}`;
    if (body !== undefined) headers["Content-Type"] = "application/json";
    try {
      return await fetch(path, { method, headers, cache: "no-store",
        body: body === undefined ? undefined : JSON.stringify(body) });
    } catch (err) {
      onOffline?.(true);
      throw new ApiError("the server cannot be reached", { path });
    }
  }

  async function call(method, path, body) {
    let r = await send(method, path, body, false);
    if (r.status === 401) r = await send(method, path, body, true);  // token renewed once
    onOffline?.(false);
    if (r.status === 204) return null;
    const text = await r.text();
    let data = null;
    try {
      data = text ? JSON.parse(text) : null;
    } catch {
      data = null;
    }
    if (r.ok) return data;
    const detail = data?.detail || data?.reason || `HTTP ${r.status}`;
    const err = new ApiError(detail, { status: r.status, path: path.split("?")[0], problem: data });
    if (err.expired) onExpired?.(err);
    if (r.status >= 502 && r.status <= 504) onOffline?.(true);
    throw err;
  }

  return {
    get: (path) => call("GET", path),
    post: (path, body) => call("POST", path, body),
    put: (path, body) => call("PUT", path, body),
    patch: (path, body) => call("PATCH", path, body),
    del: (path) => call("DELETE", path),
  };
}

// A live occupancy stream (SSE); `onState(obj)` per event; returns the close function.
export function occupancyStream(hiveId, onState, onStatus) {
  return occupancyStreamAt(`/v1/hives/${hiveId}/occupancy/stream`, onState, onStatus);
}

function occupancyStreamAt(url, onState, onStatus) {
  const source = new EventSource(url);
  source.addEventListener("occupancy", (ev) => {
    try {
      onState(JSON.parse(ev.data));
    } catch {
      /* a malformed event is skipped; the next one carries the whole state */
    }
  });
  source.onopen = () => onStatus?.("live");
  source.onerror = () => onStatus?.(source.readyState === EventSource.CLOSED ? "closed" : "reconnecting");
  return () => source.close();
}

// Live occupancy of several hives on one stream (GET /v1/occupancy/stream?ids=, at
// most 100 ids): each event is one hive's state.
export function occupancyStreamMany(ids, onState, onStatus) {
  return occupancyStreamAt(`/v1/occupancy/stream?ids=${ids.join(",")}`, onState, onStatus);
}

// Occupancy history of a hive (`base` = /v1/hives/ID).
export function history(api, base, from, to, bucket) {
  return api.get(`${base}/occupancy/history?from=${from}&to=${to}&bucket=${bucket}`);
}
