// Optional enhancement of the schema editor's JSON page: check the JSON as it is typed (syntax
// here, the schema rules on the server, which answers with each problem's pointer). Without it
// the same checks run when the form is submitted.
(function () {
  "use strict";
  var box = document.getElementById("s-schema");
  var out = document.getElementById("s-schema-status");
  if (!box || !out || !window.fetch) return;
  var form = box.form, timer = null, seq = 0;
  function show(text, bad) {
    out.textContent = text;
    out.className = "check-status" + (bad ? " error" : " ok");
    box.setAttribute("aria-invalid", bad ? "true" : "false");
  }
  function check() {
    try { JSON.parse(box.value); } catch (e) {
      show(box.getAttribute("data-bad-json") + " " + e.message, true);
      return;
    }
    var mine = ++seq, body = new URLSearchParams();
    body.set("schema", box.value);
    var isNew = form.querySelector("input[name=new]");
    if (isNew) body.set("new", isNew.value);
    fetch(box.getAttribute("data-check-url"), {method: "POST", body: body, credentials: "same-origin"})
      .then(function (r) { return r.json(); })
      .then(function (res) {
        if (mine !== seq) return;  // a newer check is on its way
        if (res.ok) { show(box.getAttribute("data-ok"), false); return; }
        show(box.getAttribute("data-problems") + " " + res.errors.map(function (e) {
          return (e.pointer || "/") + ": " + e.message;
        }).join("; "), true);
      })
      .catch(function () { out.textContent = ""; });
  }
  box.addEventListener("input", function () {
    clearTimeout(timer);
    timer = setTimeout(check, 400);
  });
})();
