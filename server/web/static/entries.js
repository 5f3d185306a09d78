// Entry log: a "Snapshot" link shows the refused face in its row, only when clicked (each view is audited
// by the server; nothing is loaded before someone asks). Without JavaScript the link opens the picture.
document.querySelectorAll("a.snapshot-link").forEach((link) => {
  link.addEventListener("click", (event) => {
    event.preventDefault();
    const img = document.createElement("img");
    img.className = "snapshot";
    img.alt = link.dataset.alt || "";
    img.width = 96;  // a thumbnail; the picture itself is at most snapshots.max_px (160 by default)
    img.src = link.href;
    link.replaceWith(img);
  });
});
