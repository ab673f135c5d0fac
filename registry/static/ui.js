// Optional enhancement: add/remove array rows in the page. Without it the buttons submit the
// form and the server answers with one row more or less, so everything works without JS.
(function () {
  "use strict";
  document.addEventListener("click", function (ev) {
    var add = ev.target.closest("[data-add]");
    if (add) {
      var box = add.closest("[data-array]");
      var tpl = box && box.querySelector(":scope > template");
      if (!tpl) return;
      ev.preventDefault();
      var name = box.getAttribute("data-array");
      var i = parseInt(box.getAttribute("data-next") || "0", 10);
      var rows = box.querySelector(":scope > .rows");
      var html = tpl.innerHTML.split(name + ".__i__").join(name + "." + i)
        .split(name.replace(/\./g, "-") + "-__i__").join(name.replace(/\./g, "-") + "-" + i)
        .split("__n__").join(String(rows.children.length + 1));
      rows.insertAdjacentHTML("beforeend", html);
      box.setAttribute("data-next", String(i + 1));
      var first = rows.lastElementChild.querySelector("input,select,textarea");
      if (first) first.focus();
      return;
    }
    var remove = ev.target.closest("[data-remove]");
    if (remove) {
      var row = remove.closest(".row");
      if (!row) return;
      ev.preventDefault();
      var box2 = row.closest("[data-array]");
      row.remove();
      var next = box2 && box2.querySelector("[data-add]");
      if (next) next.focus();
    }
  });
  var summary = document.getElementById("error-summary") || document.getElementById("conflict");
  if (summary) { summary.setAttribute("tabindex", "-1"); summary.focus(); }
})();
