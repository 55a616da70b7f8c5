// The customer usage page: a link carries the portal token in its fragment (#token=…), which
// the browser never sends to a server. This moves it into the page's form, drops it from the
// address bar and history, and posts the form once; the server keeps it in a cookie.
(() => {
  const found = /(?:^#|&)token=([^&]+)/.exec(window.location.hash);
  if (!found) return;
  window.history.replaceState(null, "", window.location.pathname + window.location.search);
  const form = document.getElementById("portal-open");
  if (!(form instanceof HTMLFormElement)) return;
  form.elements.namedItem("token").value = decodeURIComponent(found[1]);
  form.submit();
})();
