// Buttons marked data-print print the page (inline handlers are blocked by the pages' CSP).
document.querySelectorAll("[data-print]").forEach((button) => {
  button.addEventListener("click", () => window.print());
});
