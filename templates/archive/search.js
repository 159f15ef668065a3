// The search page: filters the list of every summary (already on the page) with the prebuilt
// index search.json, by the words in the search box (all must match; case and accents ignored).
(() => {
  const box = document.getElementById("search-box");
  const list = document.getElementById("search-results");
  const status = document.getElementById("search-status");
  if (!box || !list || !status) return;
  const fold = (text) => text.normalize("NFD").replace(/\p{M}/gu, "").toLowerCase();
  const items = [...list.children];
  fetch(list.dataset.index)
    .then((response) => response.json())
    .then((index) => {
      const texts = new Map(index.map((entry) => [entry.key, entry.text]));
      const show = () => {
        const words = fold(box.value).split(/\s+/).filter(Boolean);
        let found = 0;
        for (const item of items) {
          const text = texts.get(item.dataset.key) || "";
          item.hidden = !words.every((word) => text.includes(word));
          found += item.hidden ? 0 : 1;
        }
        status.textContent = words.length
          ? `${found} of ${items.length} summaries match “${box.value.trim()}”.`
          : `${items.length} summaries in the archive, newest first.`;
      };
      box.value = new URLSearchParams(location.search).get("q") || "";
      box.addEventListener("input", show);
      show();
    });
})();
