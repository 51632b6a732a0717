// The sdm console's one script: what only a script can do. Every page works without it.
"use strict";

document.addEventListener("DOMContentLoaded", () => {
  // A dialog rendered open becomes modal (focus stays inside, Escape closes it).
  for (const dialog of document.querySelectorAll("dialog[data-modal][open]")) {
    // Not close(): its close event would reach the listener below and remove the dialog.
    dialog.removeAttribute("open");
    dialog.showModal();
  }
  // Copy buttons: copy the named field, say so.
  for (const button of document.querySelectorAll("button[data-copy]")) {
    const field = document.getElementById(button.dataset.copy);
    if (!field || !navigator.clipboard) continue;
    button.hidden = false;
    button.addEventListener("click", async () => {
      await navigator.clipboard.writeText(field.value);
      const said = button.closest("dialog")?.querySelector("[data-copied]");
      if (said) said.hidden = false;
    });
  }
  // A closed token dialog is removed, so the token is no longer in the page.
  for (const dialog of document.querySelectorAll("dialog.token")) {
    dialog.addEventListener("close", () => dialog.remove());
  }
});

// The add-resource form: fields of one kind show (and are posted) only for that kind.
document.addEventListener("DOMContentLoaded", () => {
  const kind = document.querySelector("select[data-kind-select]");
  if (!kind) return;
  const sync = () => {
    for (const set of document.querySelectorAll("fieldset[data-kind]")) {
      const on = set.dataset.kind === kind.value;
      set.hidden = !on;
      set.disabled = !on;
    }
  };
  kind.addEventListener("change", sync);
  sync();
});
