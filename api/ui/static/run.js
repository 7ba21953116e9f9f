// Run page: follow the run's events (Server-Sent Events, /ui/runs/ID/events), append them to the
// log, repaint each node's status from /ui/runs/ID/state; reload once the run needs an answer
// or has ended (the server renders the answer form and the outputs). A slow poll covers a
// stream that cannot open (too many open streams for this token, a proxy that buffers).
"use strict";
(function () {
  // Composite nodes: opening one lists its child runs (a page at a time, from /ui/runs/ID/children).
  async function loadChildren(box, url, append) {
    const response = await fetch(url, { headers: { Accept: "text/html" } });
    if (!response.ok) return;
    const html = await response.text();
    if (!append) { box.innerHTML = html; return; }
    // a further page: its rows go under the rows shown, its "more" link replaces the old one
    const page = document.createElement("div");
    page.innerHTML = html;
    box.querySelector(".more-children")?.parentElement.remove();
    box.querySelector("tbody").append(...page.querySelectorAll("tbody tr"));
    const more = page.querySelector(".more-children");
    if (more) box.append(more.parentElement);
  }
  for (const details of document.querySelectorAll("details[data-children]")) {
    const box = details.querySelector(".children");
    details.addEventListener("toggle", () => {
      if (details.open && !details.dataset.loaded) { details.dataset.loaded = "1"; loadChildren(box, details.dataset.children, false); }
    });
    if (details.open) details.dataset.loaded = "1";  // the server rendered its first page
    box.addEventListener("click", (event) => {
      const more = event.target.closest(".more-children");
      if (!more) return;
      event.preventDefault();
      loadChildren(box, more.dataset.more, true);
    });
  }

  const root = document.getElementById("run");
  if (!root || root.dataset.live !== "yes") return;
  const runId = root.dataset.run;
  const FINAL = new Set(["succeeded", "failed", "cancelled"]);
  const NODE_STATUS = {
    "node.started": "running", "node.resumed": "running", "node.succeeded": "succeeded", "node.failed": "failed",
    "node.retrying": "retrying", "node.skipped": "skipped", "node.interrupted": "interrupted",
    "node.delegated": "delegated", "node.woken": "queued",
  };
  const EVENTS = ["run.queued", "run.started", "run.succeeded", "run.failed", "run.cancelled", "run.interrupted",
    "run.resumed", "node.progress", "node.chunk", "node.chunk_reset", ...Object.keys(NODE_STATUS)];
  const rows = document.getElementById("event-rows");
  const state = document.getElementById("live-state");
  let timer = null;
  let source = null;
  let reloading = false;

  function setStatus(element, status) {
    for (const name of [...element.classList]) if (name.startsWith("s-")) element.classList.remove(name);
    element.classList.add("s-" + status);
  }

  function paint(nodeId, status, label) {
    const node = document.querySelector('#graph .node[data-node="' + CSS.escape(nodeId) + '"]');
    if (!node) return;
    setStatus(node, status);
    node.querySelector(".st").textContent = label || status;
    node.setAttribute("aria-label", nodeId + ": " + status);
  }

  function cell(text, className) {
    const td = document.createElement("td");
    td.textContent = text;
    if (className) td.className = className;
    return td;
  }

  function log(event) {
    // token chunks and a composite's progress: the graph shows them; the log keeps the transitions
    if (event.type === "node.chunk" || event.type === "node.progress") return;
    const tr = document.createElement("tr");
    tr.append(cell(String(event.id), "num"), cell((event.at || "").replace("T", " ").slice(0, 19), "mono"),
      cell(event.type), cell(""));
    if (event.node_id) {
      const link = document.createElement("a");
      link.href = "?node=" + encodeURIComponent(event.node_id) + "#inspector";
      link.textContent = event.node_id;
      tr.lastChild.append(link);
    }
    rows.append(tr);
    while (rows.children.length > 1000) rows.firstElementChild.remove();
  }

  async function refresh() {
    timer = null;
    let response;
    try {
      response = await fetch("/ui/runs/" + runId + "/state", { headers: { Accept: "application/json" } });
    } catch (error) { return; }
    if (response.status === 401) { location.reload(); return; }
    if (!response.ok) return;
    const run = await response.json();
    for (const [nodeId, [status, , progress]] of Object.entries(run.nodes)) {
      paint(nodeId, status, progress ? progress.done + "/" + progress.total : status);
      const bar = progress && document.querySelector('#graph .node[data-node="' + CSS.escape(nodeId) + '"] .bar');
      if (bar && progress.total) bar.setAttribute("width", String(Math.round(bar.dataset.full * progress.done / progress.total)));
    }
    const chip = document.getElementById("run-status");
    chip.textContent = run.status;
    setStatus(chip, run.status);
    document.getElementById("run-tokens").textContent =
      String((run.usage.input_tokens || 0) + (run.usage.output_tokens || 0));
    const needsPage = FINAL.has(run.status) || (run.interrupt && run.interrupt !== root.dataset.interrupt);
    if (needsPage && !reloading) {
      reloading = true;
      if (source) source.close();
      state.textContent = "Run " + run.status + ": reloading";
      setTimeout(() => location.reload(), 400);  // the last repaint stays visible a moment
    }
  }

  function schedule() { if (!timer) timer = setTimeout(refresh, 200); }

  function onEvent(message) {
    const event = JSON.parse(message.data);
    log(event);
    if (event.node_id && NODE_STATUS[event.type]) paint(event.node_id, NODE_STATUS[event.type]);
    schedule();
  }

  if ("EventSource" in window) {
    source = new EventSource("/ui/runs/" + runId + "/events?after=" + root.dataset.lastEvent);
    for (const type of EVENTS) source.addEventListener(type, onEvent);
    source.onopen = () => { state.textContent = "Following live"; };
    source.onerror = () => { state.textContent = "Reconnecting…"; };
  }
  setInterval(() => { if (!document.hidden) schedule(); }, 5000);
})();
