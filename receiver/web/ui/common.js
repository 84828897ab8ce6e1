// Shared by the dashboard pages: API calls with the session cookie, the live feed, small renderers.
export const csrf = document.querySelector('meta[name="csrf-token"]').content;

export const FEED_TYPES = [
  "kontext.job.state", "kontext.delivery.state", "kontext.edit.completed",
  "kontext.edit.failed", "kontext.edit.moderated", "kontext.edit.expired",
];

export async function api(path, options = {}) {
  const headers = { Accept: "application/json", ...(options.headers || {}) };
  if (options.method && options.method !== "GET") headers["X-CSRF-Token"] = csrf;
  const response = await fetch(path, { credentials: "same-origin", ...options, headers });
  if (response.status === 401) {
    window.location.assign("/ui/");
    throw new Error("signed out");
  }
  const body = await response.json();
  if (!response.ok) throw new Error(typeof body.detail === "string" ? body.detail : response.statusText);
  return body;
}

// Calls onEntry(jobId, type, data) for each feed entry; the browser resumes with Last-Event-ID.
export function follow(query, onEntry) {
  const live = document.getElementById("live");
  const source = new EventSource("/v1/events" + query);
  source.onopen = () => { live.textContent = "live"; live.dataset.state = "open"; };
  source.onerror = () => { live.textContent = "reconnecting…"; live.dataset.state = "closed"; };
  for (const type of FEED_TYPES) {
    source.addEventListener(type, (message) => {
      const data = JSON.parse(message.data);
      onEntry(data.job_id || data.subject, type, data);
    });
  }
  return source;
}

export function element(tag, attributes = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attributes)) {
    if (key === "class") node.className = value;
    else if (key === "text") node.textContent = value;
    else node.setAttribute(key, value);
  }
  node.append(...children);
  return node;
}

// A sink's short name: a file sink by its file name, any other by its host (the full URL in a tooltip).
export function shortSink(sink) {
  const rest = sink.replace(/^[a-z0-9+]+:\/\//, "");
  return sink.startsWith("file:") ? rest.split("/").pop() : rest.split("/")[0] || sink;
}

export function badge(state) {
  return element("span", { class: `badge badge-${state}`, text: state });
}

export function age(iso, now = Date.now()) {
  const seconds = Math.max(0, Math.round((now - Date.parse(iso)) / 1000));
  if (seconds < 60) return `${seconds}s`;
  if (seconds < 3600) return `${Math.floor(seconds / 60)}m ${seconds % 60}s`;
  if (seconds < 86400) return `${Math.floor(seconds / 3600)}h ${Math.floor((seconds % 3600) / 60)}m`;
  return `${Math.floor(seconds / 86400)}d`;
}

// Runs `task` at most once per `ms`, and once more after the last call.
export function throttle(task, ms) {
  let timer = null;
  let again = false;
  return () => {
    if (timer) { again = true; return; }
    task();
    timer = setTimeout(() => { timer = null; if (again) { again = false; task(); } }, ms);
  };
}
