// The "Synthesise" button of the listen page: starts the synthesis in the background, shows its progress
// by polling, then plays the result. Other requests are never held up by it.
(function () {
  const button = document.getElementById("synthesize");
  if (!button) return;
  const bar = document.getElementById("synthesis-progress");
  const status = document.getElementById("synthesis-status");
  const audio = document.getElementById("synthesis-audio");

  const poll = async (job) => {
    const response = await fetch(`/listen/synthesis/${job}`, { headers: { Accept: "application/json" } });
    const record = await response.json();
    if (!response.ok) throw new Error(record.detail || response.statusText);
    if (record.total) { bar.max = record.total; bar.value = record.done; }
    if (record.state === "done") {
      status.textContent = "done";
      audio.src = record.audio_url;
      audio.hidden = false;
      button.disabled = false;
      return;
    }
    if (record.state === "failed") throw new Error(record.error);
    status.textContent = record.state === "queued" ? "waiting for a free synthesiser..." : `step ${record.done} of ${record.total}`;
    setTimeout(() => poll(job).catch(fail), 500);
  };
  const fail = (error) => {
    status.textContent = `failed: ${error.message}`;
    button.disabled = false;
  };
  button.addEventListener("click", async () => {
    button.disabled = true;
    bar.hidden = false;
    status.textContent = "starting...";
    try {
      const response = await fetch("/listen/synthesis", {
        method: "POST",
        headers: { "Content-Type": "application/json", Accept: "application/json", "X-CSRF-Token": button.dataset.csrf },
        body: JSON.stringify({ prediction: button.dataset.prediction }),
      });
      const record = await response.json();
      if (!response.ok) throw new Error(record.detail || response.statusText);
      await poll(record.id);
    } catch (error) {
      fail(error);
    }
  });
})();
