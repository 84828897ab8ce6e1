// The jobs table and overview strip, kept current by /v1/events.
import { age, api, badge, element, follow, shortSink, throttle } from "/ui/static/common.js";

const rows = document.getElementById("rows");
const stateFilter = document.getElementById("state");
const deadFilter = document.getElementById("dead");
const STATES = ["created", "submitted", "received", "stored", "published", "failed", "moderated", "expired"];
const jobs = new Map(); // job id -> its last view
const KEEP = 200;

function sinkBadges(job) {
  const cell = element("div", { class: "sink-badges" });
  for (const d of job.deliveries || []) {
    const name = shortSink(d.sink);
    cell.append(element("span", { class: `badge badge-${d.state}`, title: `${d.sink}: ${d.state}` },
      `${name}: ${d.state}`));
  }
  if (!cell.childElementCount) cell.append(element("span", { class: "muted", text: "–" }));
  return cell;
}

function row(job) {
  const link = element("a", { href: `/ui/jobs/${encodeURIComponent(job.id)}`, text: job.id.slice(0, 8) });
  const tr = element("tr", { "data-job": job.id, "data-state": job.state },
    element("td", { "data-label": "Job" }, link),
    element("td", { "data-label": "State" }, badge(job.state)),
    element("td", { "data-label": "Model", text: job.model.replace("flux-kontext-", "kontext-") }),
    element("td", { "data-label": "Prompt", class: "prompt-cell", text: job.prompt, title: job.prompt }),
    element("td", { "data-label": "Age", class: "age", "data-created": job.created_at, text: age(job.created_at) }),
    element("td", { "data-label": "Outcome", text: job.outcome || "–" }),
    element("td", { "data-label": "Sinks" }, sinkBadges(job)),
  );
  return tr;
}

function matches(job) {
  if (stateFilter.value && job.state !== stateFilter.value) return false;
  if (deadFilter.checked && !(job.deliveries || []).some((d) => d.state === "dead")) return false;
  return true;
}

function render() {
  const shown = [...jobs.values()].filter(matches).sort((a, b) => b.created_at.localeCompare(a.created_at));
  rows.replaceChildren(...shown.slice(0, 100).map(row));
  document.getElementById("empty").hidden = shown.length > 0;
}

async function load() {
  const params = new URLSearchParams({ limit: "100", include: "deliveries" });
  if (stateFilter.value) params.set("state", stateFilter.value);
  if (deadFilter.checked) params.set("delivery", "dead");
  const body = await api(`/v1/jobs?${params}`);
  jobs.clear();
  for (const job of body.jobs) jobs.set(job.id, job);
  render();
}

async function refreshJob(jobId) {
  const job = await api(`/v1/jobs/${encodeURIComponent(jobId)}`);
  jobs.set(job.id, job);
  if (jobs.size > KEEP) { // a tab left open for days keeps the newest only
    const oldest = [...jobs.values()].sort((a, b) => a.created_at.localeCompare(b.created_at));
    for (const stale of oldest.slice(0, jobs.size - KEEP)) jobs.delete(stale.id);
  }
  render();
}

async function overview() {
  const seen = await api("/v1/overview");
  document.getElementById("states").replaceChildren(...STATES.map((state) =>
    element("li", { class: `tile tile-${state}` },
      element("span", { class: "count", text: String(seen.jobs[state] || 0) }),
      element("span", { class: "label", text: state }))));
  document.getElementById("rate").textContent = String(seen.events_per_minute);
  document.getElementById("dead-count").textContent = String(seen.dead_letters);
  document.getElementById("sinks").replaceChildren(...Object.entries(seen.sinks).map(([sink, reach]) => {
    const oldest = seen.oldest_undelivered[sink];
    return element("span", { class: "sink", "data-sink": sink, title: reach.error || sink },
      element("span", { class: `badge badge-${reach.reachable ? "reachable" : "unreachable"}`,
        text: reach.reachable ? "reachable" : "unreachable" }),
      ` ${shortSink(sink)}: ${oldest ? `oldest undelivered ${age(oldest.since)}` : "all delivered"}`);
  }));
}

const pending = new Set();
const flush = throttle(() => {
  const ids = [...pending];
  pending.clear();
  for (const id of ids) refreshJob(id).catch(() => {});
}, 250);
const refreshOverview = throttle(() => overview().catch(() => {}), 1000);

stateFilter.addEventListener("change", () => load());
deadFilter.addEventListener("change", () => load());
setInterval(() => {
  for (const cell of rows.querySelectorAll("td.age")) cell.textContent = age(cell.dataset.created);
}, 5000);

// Follow first, then load: a change committed while the table loads still reaches it.
follow("", (jobId) => {
  if (jobId) pending.add(jobId);
  flush();
  refreshOverview();
});
await Promise.all([load(), overview()]);
