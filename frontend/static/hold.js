// The task page's heartbeat: while it is open, the unit stays held for this annotator (the server's
// hold_idle_minutes); a closed tab stops it, and the unit goes back to the queue within minutes.
(function () {
  const progress = document.getElementById("campaign-progress");
  if (!progress || !progress.dataset.holdPath) return;
  const HEARTBEAT_MS = 60 * 1000;
  setInterval(function () {
    fetch(progress.dataset.holdPath, {
      method: "POST", credentials: "same-origin",
      headers: { Accept: "application/json", "X-CSRF-Token": progress.dataset.csrf },
    }).catch(function () { /* offline for a moment: the next beat tries again */ });
  }, HEARTBEAT_MS);
})();
