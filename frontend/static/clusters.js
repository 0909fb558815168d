// Click a frame to hear its clip; another click pauses it.
document.querySelectorAll(".frames img[data-clip]").forEach((img) => img.addEventListener("click", () => {
  const audio = document.getElementById(img.dataset.clip);
  document.querySelectorAll(".frames audio").forEach((a) => { if (a !== audio) { a.pause(); a.parentElement.classList.remove("playing"); } });
  if (audio.paused) { audio.play(); audio.parentElement.classList.add("playing"); }
  else { audio.pause(); audio.parentElement.classList.remove("playing"); }
}));
