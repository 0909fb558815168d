// The unit page's play buttons: one clip at a time; the button shows whether its clip is playing.
document.querySelectorAll("button.play[data-clip]").forEach((button) => {
  const audio = document.getElementById(button.dataset.clip);
  audio.addEventListener("play", () => { button.textContent = "❚❚"; button.classList.add("playing"); });
  const stopped = () => { button.textContent = "▶"; button.classList.remove("playing"); };
  audio.addEventListener("pause", stopped);
  audio.addEventListener("ended", stopped);
  button.addEventListener("click", () => {
    document.querySelectorAll(".unit-images audio").forEach((a) => { if (a !== audio) a.pause(); });
    if (audio.paused) audio.play(); else audio.pause();
  });
});
