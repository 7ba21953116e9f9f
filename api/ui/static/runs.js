// Runs page: while on the newest page and the tab is visible, refresh the rows and the counts
// every few seconds from /ui/runs/live (a list has no event stream of its own).
"use strict";
(function () {
  const body = document.getElementById("run-rows");
  if (!body || !body.dataset.live) return;
  let last = "";
  async function tick() {
    if (document.hidden) return;
    try {
      const response = await fetch(body.dataset.live, { headers: { Accept: "application/json" } });
      if (response.status === 401) { location.reload(); return; }  // signed out: the page redirects
      if (!response.ok) return;
      const data = await response.json();
      if (data.rows !== last) { body.innerHTML = data.rows; last = data.rows; }
      for (const link of document.querySelectorAll("#counts a[data-status]")) {
        link.querySelector("b").textContent = String(data.counts[link.dataset.status] ?? 0);
      }
    } catch (error) { /* offline for a moment: the next tick tries again */ }
  }
  setInterval(tick, 4000);
})();
