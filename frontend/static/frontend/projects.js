// The project list: a project's number opens its workbench, Shift and the number its demonstrations.
document.addEventListener("keydown", (event) => {
  if (event.ctrlKey || event.metaKey || event.altKey || event.target.matches("input, textarea, select")) return;
  const match = /^Digit([1-9])$/.exec(event.code);
  if (!match) return;
  const key = event.shiftKey ? `Shift+${match[1]}` : match[1];
  const link = document.querySelector(`a[data-key="${key}"]`);
  if (link) link.click();
});
