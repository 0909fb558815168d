// The live job page: poll /api/jobs/<id> every second; redraw the bar, the metrics chart and the log.
(function () {
  const first = JSON.parse(document.getElementById("job-state").textContent);
  const ended = (s) => !["queued", "running"].includes(s);
  const $ = (id) => document.getElementById(id);
  let drawn = -1;

  const draw = (job) => {
    $("status").textContent = job.status;
    $("status").className = "status-" + job.status;
    $("stage").textContent = job.stage;
    $("waiting").textContent = job.waiting || "";
    $("bar").style.width = (100 * job.progress).toFixed(1) + "%";
    $("percent").textContent = Math.round(100 * job.progress) + "%";
    const log = $("log");
    const atBottom = log.scrollTop + log.clientHeight >= log.scrollHeight - 4;
    log.textContent = job.log;
    if (atBottom) log.scrollTop = log.scrollHeight;
    const m = job.metrics;
    if (m.length === 0 || m.length === drawn) return;
    drawn = m.length;
    const last = m[m.length - 1];
    $("current").textContent = `epoch ${last.epoch.toFixed(2)} · loss ${last.loss.toFixed(3)} · ` +
      `test accuracy ${(100 * last.test_accuracy).toFixed(1)}% (chance ${(100 * last.chance).toFixed(1)}%)`;
    const epochs = m.map((r) => r.epoch);
    Plotly.react("metrics-chart", [
      { x: epochs, y: m.map((r) => r.loss), name: "training loss", mode: "lines+markers" },
      { x: epochs, y: m.map((r) => r.test_loss), name: "test loss", mode: "lines+markers" },
      { x: epochs, y: m.map((r) => r.test_accuracy), name: "sound-label accuracy (test)", mode: "lines+markers", yaxis: "y2" },
    ], {
      height: 320, margin: { t: 30, r: 60, l: 50, b: 40 }, title: { text: "Training" },
      xaxis: { title: { text: "epoch" } }, yaxis: { title: { text: "loss" } },
      yaxis2: { title: { text: "accuracy" }, overlaying: "y", side: "right", range: [0, 1] },
      legend: { orientation: "h" },
    }, { displayModeBar: false });
  };

  const poll = async () => {
    const response = await fetch(`/api/jobs/${first.id}`, { headers: { Accept: "application/json" } });
    if (!response.ok) return;
    const job = await response.json();
    draw(job);
    // The server renders the buttons an ended job offers: reload once when it ends.
    if (ended(job.status)) { if (!ended(first.status)) location.reload(); return; }
    setTimeout(poll, 1000);
  };
  draw(first);
  if (!ended(first.status)) setTimeout(poll, 1000);
})();
