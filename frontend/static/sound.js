// Keyboard-first sound judgements: move between clips, play one, judge it.
(function () {
  const form = document.getElementById("sound-form");
  const clips = Array.from(document.querySelectorAll("#clips .clip"));
  const count = document.getElementById("judged-count");
  const progress = document.getElementById("judged-progress");
  const played = document.getElementById("played-count");
  const autoplay = document.getElementById("autoplay");
  autoplay.closest("label").hidden = false;
  let current = 0;

  const updateCount = () => {
    const judged = clips.filter((c) => c.querySelector("input:checked")).length;
    count.textContent = judged;
    progress.value = judged;
  };
  // A clip once played is marked, however it was started (key, its own controls).
  clips.forEach((c) => c.querySelector("audio").addEventListener("play", () => {
    c.classList.add("played");
    played.textContent = clips.filter((x) => x.classList.contains("played")).length;
  }));
  const select = (i) => {
    current = Math.max(0, Math.min(clips.length - 1, i));
    clips[current].focus();
  };
  const play = () => {
    const audio = clips[current].querySelector("audio");
    document.querySelectorAll("#clips audio").forEach((a) => { if (a !== audio) a.pause(); });
    // play() is refused when a pause comes first (judging fast): that is the judge's choice, not an error.
    if (audio.paused) audio.play().catch((e) => { if (e.name !== "AbortError") throw e; });
    else audio.pause();
  };
  const judge = (value) => {
    clips[current].querySelector(`input[value=${value}]`).checked = true;
    updateCount();
    const next = current + 1;
    select(next);
    if (next < clips.length && autoplay.checked) play();
    else clips.forEach((c) => c.querySelector("audio").pause());
  };

  clips.forEach((c, i) => c.addEventListener("focus", () => { current = i; }));
  form.addEventListener("change", updateCount);
  document.addEventListener("keydown", (e) => {
    if (e.ctrlKey || e.metaKey || e.altKey) return;
    const columns = Math.max(1, Math.round(form.querySelector("#clips").clientWidth / clips[0].offsetWidth));
    const moves = { ArrowLeft: -1, ArrowRight: 1, ArrowUp: -columns, ArrowDown: columns };
    if (e.key in moves) { e.preventDefault(); select(current + moves[e.key]); return; }
    switch (e.key.toLowerCase()) {
      case "p": e.preventDefault(); play(); break;
      case "y": e.preventDefault(); judge("yes"); break;
      case "n": e.preventDefault(); judge("no"); break;
      case "s": e.preventDefault(); judge("unsure"); break;
      case "u": {
        const undo = document.getElementById("undo-form");
        if (undo) { e.preventDefault(); undo.submit(); }
        break;
      }
      case "enter": e.preventDefault(); form.requestSubmit(); break;
    }
  });
  updateCount();
})();
