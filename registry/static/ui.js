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

// Searchable pickers (reference fields of the generated forms, and the task pages' pickers).
// A <select data-reference|data-picker> gets a search box above it that narrows its options as
// one types; a text box with a <datalist> (a reference with too many records to list) asks
// the server (`/ui/pick/<entity>?q=&ref=<form entity>.<field path>`) for names as one types.
// Without JavaScript the select, or the text box and its suggestions, still work as they are.
(function () {
  "use strict";
  var prefix = "/ui";
  function refOf(el) {
    if (el.getAttribute("data-picker-ref")) return el.getAttribute("data-picker-ref");
    var form = el.form, m = form && (form.getAttribute("action") || "").match(/\/ui\/([^/?]+)\//);
    return m ? m[1] + "." + el.name.split(".").filter(function (p) { return !/^\d+$/.test(p); }).join(".") : "";
  }
  function filterSelect(select) {
    var box = document.createElement("input");
    box.type = "search";
    box.className = "picker-search";
    box.setAttribute("aria-label", (select.labels && select.labels[0] ? select.labels[0].textContent : "") + " 🔍");
    box.setAttribute("autocomplete", "off");
    select.parentNode.insertBefore(box, select);
    box.addEventListener("input", function () {
      var q = box.value.trim().toLowerCase(), first = null;
      Array.prototype.forEach.call(select.options, function (o) {
        var show = !o.value || !q || o.textContent.toLowerCase().indexOf(q) >= 0 || o.value.toLowerCase().indexOf(q) >= 0;
        o.hidden = !show;
        if (show && o.value && !first) first = o;
      });
      if (first && select.selectedOptions.length && select.selectedOptions[0].hidden) select.value = first.value;
    });
  }
  function suggest(input) {
    var list = input.list, entity = input.getAttribute("data-reference") || input.getAttribute("data-picker");
    if (!list || !entity) return;
    var timer = null, ref = refOf(input);
    input.addEventListener("input", function () {
      clearTimeout(timer);
      var q = input.value.trim();
      if (q.length < 2) return;
      timer = setTimeout(function () {
        var url = prefix + "/pick/" + encodeURIComponent(entity) + "?q=" + encodeURIComponent(q.slice(0, 100)) + (ref ? "&ref=" + encodeURIComponent(ref) : "");
        fetch(url, { credentials: "same-origin", headers: { Accept: "application/json" } })
          .then(function (r) { return r.ok ? r.json() : { items: [] }; })
          .then(function (body) {
            list.innerHTML = "";
            (body.items || []).forEach(function (it) {
              var o = document.createElement("option");
              o.value = it.value;
              o.textContent = it.hint ? it.label + " (" + it.hint + ")" : it.label;
              list.appendChild(o);
            });
          }).catch(function () {});
      }, 200);
    });
  }
  document.querySelectorAll("select[data-reference], select[data-picker]").forEach(function (s) {
    if (s.options.length > 8) filterSelect(s);
  });
  document.querySelectorAll("input[data-reference][list], input[data-picker][list]").forEach(suggest);
  // the dose form: choosing a batch fills in its vaccine's total doses
  var batch = document.querySelector("[data-dose-batch]"), total = document.querySelector("[data-dose-total]");
  if (batch && total) {
    batch.addEventListener("change", function () {
      var o = batch.selectedOptions[0];
      if (o && o.getAttribute("data-total")) total.value = o.getAttribute("data-total");
    });
  }
})();
