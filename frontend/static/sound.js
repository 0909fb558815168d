// Keyboard-first sound judgements: move between clips, play one, judge it.
(function () {
  const form = document.getElementById("sound-form");
  const clips = Array.from(document.querySelectorAll("#clips .clip"));
  const count = document.getElementById("judged-count");
  let current = 0;

  const updateCount = () => {
    count.textContent = clips.filter((c) => c.querySelector("input:checked")).length;
  };
  const select = (i) => {
    current = Math.max(0, Math.min(clips.length - 1, i));
    clips[current].focus();
  };
  const play = () => {
    const audio = clips[current].querySelector("audio");
    document.querySelectorAll("#clips audio").forEach((a) => { if (a !== audio) a.pause(); });
    if (audio.paused) audio.play(); else audio.pause();
  };
  const judge = (value) => {
    clips[current].querySelector(`input[value=${value}]`).checked = true;
    updateCount();
    select(current + 1);
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
      case "enter": e.preventDefault(); form.requestSubmit(); break;
    }
  });
  updateCount();
})();
