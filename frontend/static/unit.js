// Keyboard-first labelling of one unit; the form also works without this script.
(function () {
  const form = document.getElementById("unit-form");
  const grid = document.getElementById("grid");
  const category = document.getElementById("category");
  const boxes = Array.from(grid.querySelectorAll("input[type=checkbox]"));
  const count = document.getElementById("marked-count");
  const answer = (value) => form.querySelector(`input[name=answer][value=${value}]`);

  const updateCount = () => { count.textContent = boxes.filter((b) => b.checked).length; };
  grid.addEventListener("change", updateCount);

  // Marking many images: all, invert, and Shift (click or Space) for every image since the last one marked.
  const setAll = (mark) => { boxes.forEach((b, i) => { b.checked = mark(b, i); }); updateCount(); };
  const markAll = () => setAll(() => true);
  const invert = () => setAll((b) => !b.checked);
  document.getElementById("mark-all").addEventListener("click", markAll);
  document.getElementById("invert-marks").addEventListener("click", invert);
  document.querySelector(".mark-tools").hidden = false;
  let anchor = null;        // the image last marked or unmarked
  let shifted = false;      // Shift was held for the click or key that is toggling an image now
  grid.addEventListener("pointerdown", (e) => { shifted = e.shiftKey; });
  grid.addEventListener("keydown", (e) => { if (e.key === " ") shifted = e.shiftKey; });
  grid.addEventListener("change", (e) => {
    const i = boxes.indexOf(e.target);
    if (i < 0) return;
    if (shifted && anchor !== null) {
      const [from, to] = anchor < i ? [anchor, i] : [i, anchor];
      for (let j = from; j <= to; j += 1) boxes[j].checked = e.target.checked;
      updateCount();
    }
    anchor = i;
    shifted = false;
  });

  // Columns of the grid as laid out now, so up/down move by one row whatever the window width.
  const columns = () => {
    const top = boxes[0].getBoundingClientRect().top;
    const n = boxes.findIndex((b) => b.getBoundingClientRect().top > top + 1);
    return n > 0 ? n : boxes.length;
  };
  const focusImage = (i) => boxes[Math.max(0, Math.min(boxes.length - 1, i))].focus();

  const choose = (value) => {
    answer(value).checked = true;
    if (value === "yes") category.focus(); else focusImage(boxes.indexOf(document.activeElement));
  };

  // A yes names its object: checked here, before sending, so that nothing marked is lost to a slip.
  const missingObject = document.getElementById("missing-object");
  form.addEventListener("submit", (e) => {
    const unnamed = answer("yes").checked && !category.value.trim();
    missingObject.hidden = !unnamed;
    if (unnamed) { e.preventDefault(); category.focus(); }
  });
  category.addEventListener("input", () => { if (category.value.trim()) missingObject.hidden = true; });

  // The instructions, over the task: ? opens them, Escape (the dialog's own) closes them.
  const instructions = document.getElementById("instructions-dialog");
  document.getElementById("show-instructions").addEventListener("click", () => instructions.showModal());

  // Undo is offered only while the server would still take the answer back.
  const undoForm = document.getElementById("undo-form");
  if (undoForm) {
    const left = new Date(undoForm.dataset.until).getTime() - Date.now();
    setTimeout(() => undoForm.remove(), Math.max(0, left));
  }

  category.addEventListener("keydown", (e) => {
    // Enter or Escape in the name box goes on to marking images; a second Enter submits.
    if (e.key === "Enter" || e.key === "Escape") { e.preventDefault(); focusImage(0); }
  });

  document.addEventListener("keydown", (e) => {
    if (e.target === category || e.ctrlKey || e.metaKey || e.altKey || instructions.open) return;
    if (e.key === "?") { e.preventDefault(); instructions.showModal(); return; }
    const i = boxes.indexOf(document.activeElement);
    const moves = { ArrowLeft: -1, ArrowRight: 1, ArrowUp: -columns(), ArrowDown: columns() };
    if (e.key in moves) { e.preventDefault(); focusImage(i < 0 ? 0 : i + moves[e.key]); return; }
    switch (e.key.toLowerCase()) {
      case "y": e.preventDefault(); choose("yes"); break;
      case "n": e.preventDefault(); choose("no"); break;
      case "t": e.preventDefault(); choose("texture"); break;
      case "a": e.preventDefault(); markAll(); break;
      case "i": e.preventDefault(); invert(); break;
      case "u": {
        const undo = document.getElementById("undo-form");
        if (undo) { e.preventDefault(); undo.submit(); }
        break;
      }
      case "enter": e.preventDefault(); form.requestSubmit(); break;
      case " ": if (i < 0) { e.preventDefault(); focusImage(0); boxes[0].click(); } break;
    }
  });
  updateCount();
})();
