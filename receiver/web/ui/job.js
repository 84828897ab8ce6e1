// One job: before/after, details, timeline, deliveries and Redeliver, kept current by /v1/events.
import { age, api, badge, element, follow, throttle } from "/ui/static/common.js";

const jobId = decodeURIComponent(window.location.pathname.split("/").pop());
const base = `/v1/jobs/${encodeURIComponent(jobId)}`;
const THUMB = 720;
const STEPS = {
  submitted_at: "Submitted to BFL", bfl_finished_at: "BFL finished", received_at: "Result reported",
  stored_at: "Image stored", finished_at: "Outcome final", published_at: "Delivered to every sink",
};
document.getElementById("job-id").textContent = jobId;
document.title = `Job ${jobId} · kontext-receiver`;

function dims(image) {
  return image ? `${image.width} × ${image.height}, ${(image.bytes / 1024).toFixed(0)} KiB, ${image.content_type}` : "–";
}

function showImage(id, src, shown) {
  const img = document.getElementById(id);
  img.closest("figure").hidden = !shown;
  if (shown && img.dataset.src !== src) { img.dataset.src = src; img.src = src; }
}

function render(job) {
  const state = document.getElementById("state");
  state.replaceWith(Object.assign(badge(job.state), { id: "state" }));
  document.getElementById("prompt").textContent = job.prompt;
  const input = (job.inputs || [])[0] || null;
  showImage("input", `${base}/input?width=${THUMB}`, Boolean(input));
  showImage("result", `${base}/image?width=${THUMB}`, Boolean(job.image));
  const note = document.getElementById("no-input");
  note.hidden = Boolean(input);
  note.textContent = input ? "" : "This job has no stored input image (it was given by URL); only the result is shown.";
  document.getElementById("mode").hidden = !(input && job.image);

  const details = [
    ["Model", job.model], ["Outcome", job.outcome || "–"], ["BFL task id", job.bfl_task_id || "–"],
    ["Cost", job.cost == null ? "–" : `${job.cost.credits} credits`], ["Via", job.via || "–"],
    ["Result", dims(job.image)], ["Result sha256", job.image ? job.image.sha256 : "–"],
  ];
  if (input) details.splice(5, 0, ["Input", dims(input)], ["Input sha256", input.sha256]);
  if (job.error) details.push(["Error", JSON.stringify(job.error)]);
  document.getElementById("details").replaceChildren(...details.flatMap(([k, v]) =>
    [element("dt", { text: k }), element("dd", { class: k.includes("sha256") || k.includes("id") ? "mono" : "", text: v })]));

  const steps = [["Created", job.created_at], ...Object.entries(job.timings).map(([k, v]) => [STEPS[k] || k, v])];
  const start = Date.parse(job.created_at);
  document.getElementById("timeline").replaceChildren(...steps.filter(([, at]) => at).map(([name, at]) =>
    element("li", {}, element("span", { class: "step", text: name }),
      element("time", { datetime: at, text: `+${((Date.parse(at) - start) / 1000).toFixed(2)} s` }))));

  document.getElementById("sinks").replaceChildren(...(job.deliveries || []).map((d) =>
    element("tr", { "data-sink": d.sink },
      element("td", { "data-label": "Sink", class: "mono", text: d.sink }),
      element("td", { "data-label": "State" }, badge(d.state)),
      element("td", { "data-label": "Attempts", text: String(d.attempts) }),
      element("td", { "data-label": "Last error", text: d.last_error || "–" }),
      element("td", { "data-label": "Delivered", text: d.delivered_at ? `${age(d.delivered_at)} ago` : "–" }))));
  document.getElementById("redeliver").disabled = !(job.deliveries || []).length;
}

const refresh = throttle(() => api(base).then(render).catch(() => {}), 250);

document.getElementById("mode").addEventListener("click", (event) => {
  const overlay = event.currentTarget.getAttribute("aria-pressed") !== "true";
  event.currentTarget.setAttribute("aria-pressed", String(overlay));
  event.currentTarget.textContent = overlay ? "Side by side" : "Overlay with slider";
  document.getElementById("pair").classList.toggle("overlay", overlay);
  document.getElementById("slider-label").hidden = !overlay;
  reveal();
});
function reveal() {
  const result = document.getElementById("result").style;
  const overlay = document.getElementById("pair").classList.contains("overlay");
  const shown = document.getElementById("slider").value;
  if (overlay) result.setProperty("clip-path", `inset(0 0 0 ${100 - shown}%)`);
  else result.removeProperty("clip-path");
}
document.getElementById("slider").addEventListener("input", reveal);
document.getElementById("redeliver").addEventListener("click", async () => {
  const status = document.getElementById("redeliver-status");
  try {
    const answer = await api(`${base}/redeliver`, { method: "POST" });
    status.textContent = `Queued again for ${answer.redelivered_to.join(", ")}.`;
  } catch (error) {
    status.textContent = `Redeliver failed: ${error.message}`;
  }
  refresh();
});

render(await api(base));
follow(`?job=${encodeURIComponent(jobId)}`, () => refresh());
