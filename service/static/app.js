// Keyboard shortcuts for the review page. No framework: the pages are server-rendered.
(function () {
  const rows = () => Array.from(document.querySelectorAll("tr[data-href]"));
  let at = -1;
  function select(i) {
    const r = rows(); if (!r.length) return;
    at = Math.max(0, Math.min(r.length - 1, i));
    r.forEach((x, k) => x.classList.toggle("sel", k === at));
    r[at].scrollIntoView({ block: "nearest" });
  }
  function focusAction(name) {
    const f = document.querySelector(`form[data-action="${name}"] input[name=reason]`);
    if (f) { f.focus(); return true; } return false;
  }
  document.addEventListener("keydown", (e) => {
    const t = e.target; if (t && (t.tagName === "INPUT" || t.tagName === "TEXTAREA" || t.tagName === "SELECT")) {
      if (e.key === "Escape") t.blur(); return;
    }
    if (e.ctrlKey || e.metaKey || e.altKey) return;
    const r = rows();
    switch (e.key) {
      case "j": select(at + 1); break;
      case "k": select(at - 1); break;
      case "o": case "Enter": if (at >= 0 && r[at]) location.href = r[at].dataset.href; break;
      case "/": { const q = document.querySelector("input[name=q]"); if (q) { e.preventDefault(); q.focus(); } break; }
      case "a": if (focusAction("accept")) e.preventDefault(); break;
      case "x": if (focusAction("reject")) e.preventDefault(); break;
      case "m": if (focusAction("merge")) e.preventDefault(); break;
      case "l": if (focusAction("relabel")) e.preventDefault(); break;
      case "g": location.href = document.body.dataset.base || "/review"; break;
      case "?": document.getElementById("help").classList.toggle("show"); break;
      default: return;
    }
  });
  // split: the checked members travel with the split form
  document.addEventListener("submit", (e) => {
    const f = e.target; if (f.dataset.action !== "split") return;
    const ids = Array.from(document.querySelectorAll("input.member:checked")).map((x) => x.value);
    f.querySelector("input[name=members]").value = ids.join(",");
  });
})();
