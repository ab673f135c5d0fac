/*
 * Offline data entry on the vaccinate page (see docs/ui.md, "Offline data entry").
 *
 * - Registers the staff pages' service worker (PREFIX/sw.js, scope PREFIX/), which keeps the
 *   app shell; this script keeps the day's data (`GET PREFIX/offline/data`) and the people
 *   looked up on this page in IndexedDB ("registry-offline"), with the time they were saved.
 * - When the registry does not answer, the page offers its own form: find a person among the
 *   saved ones (or enrol one), record the dose with the defaults the server would fill in;
 *   every entry is validated against the registry's JSON Schemas (`validate.js`) and queued in
 *   IndexedDB with an idempotency key (crypto.randomUUID()), shown in "Awaiting sync" and
 *   counted in the header.
 * - On the `online` event, on "Sync now", and when the page opens online, the queue is sent in
 *   order through the JSON API with its keys (a recipient enrolled offline first, its doses
 *   then name the server's id). Each entry gets its outcome: saved (certificate link), or
 *   refused with the server's reasons next to the fields, to fix and resend (with a new key:
 *   the registry replays a refusal for the old one) or discard. A dropped connection or a
 *   reload leaves entries pending: sending them again with the same key replays the first
 *   answer, so nothing is written twice.
 * - Sign-out clears everything this page keeps (asking first when entries wait); the day's
 *   data and looked-up people are deleted after `maxAgeHours`. A session that ended asks for
 *   sign-in before syncing and keeps the queue.
 */
(function () {
  "use strict";
  var root = document.getElementById("offline");
  if (!root || !window.indexedDB || !window.fetch) return;
  var prefix = root.getAttribute("data-prefix");
  var api = root.getAttribute("data-api");
  var user = root.getAttribute("data-user");
  var labels = JSON.parse(root.getAttribute("data-labels") || "{}");
  var texts = JSON.parse(root.getAttribute("data-texts") || "{}");
  var DB = "registry-offline";
  var MAX_LOOKED = 50;
  var db = null, data = null, looked = [], queue = [], syncing = false, online = true;

  // -- storage -----------------------------------------------------------------------------
  function openDb() {
    return new Promise(function (resolve, reject) {
      var req = indexedDB.open(DB, 1);
      req.onupgradeneeded = function () {
        req.result.createObjectStore("queue", { keyPath: "seq", autoIncrement: true });
        req.result.createObjectStore("kv", { keyPath: "k" });
      };
      req.onsuccess = function () { resolve(req.result); };
      req.onerror = function () { reject(req.error); };
    });
  }

  function run(store, mode, fn) {
    return new Promise(function (resolve, reject) {
      var t = db.transaction(store, mode), out;
      var req = fn(t.objectStore(store));
      if (req) req.onsuccess = function () { out = req.result; };
      t.oncomplete = function () { resolve(out); };
      t.onerror = t.onabort = function () { reject(t.error); };
    });
  }

  function getKv(k) { return run("kv", "readonly", function (s) { return s.get(k); }).then(function (r) { return r ? r.v : null; }); }
  function putKv(k, v) { return run("kv", "readwrite", function (s) { return s.put({ k: k, v: v }); }); }
  function delKv(k) { return run("kv", "readwrite", function (s) { return s.delete(k); }); }
  function loadQueue() { return run("queue", "readonly", function (s) { return s.getAll(); }).then(function (all) { queue = all || []; }); }
  function saveEntry(e) { return run("queue", "readwrite", function (s) { return s.put(e); }).then(function (seq) { e.seq = seq; }); }
  function dropEntry(e) { return run("queue", "readwrite", function (s) { return s.delete(e.seq); }); }

  function clearAll() {
    var jobs = [run("queue", "readwrite", function (s) { return s.clear(); }), run("kv", "readwrite", function (s) { return s.clear(); })];
    if (window.caches) {
      jobs.push(caches.keys().then(function (names) {
        return Promise.all(names.filter(function (n) { return n.indexOf("staff-shell-") === 0; }).map(function (n) { return caches.delete(n); }));
      }));
    }
    return Promise.all(jobs);
  }

  /* The day's data and looked-up people older than maxAgeHours go; so do entries already saved
     on the server. Entries not synced stay until they are sent or discarded. */
  function expire() {
    var hours = (data && data.maxAgeHours) || 12;
    var limit = Date.now() - hours * 3600 * 1000;
    var jobs = [];
    if (data && Date.parse(data.savedAt) < limit) { data = null; jobs.push(delKv("data")); }
    var kept = looked.filter(function (p) { return p.savedAt >= limit; });
    if (kept.length !== looked.length) { looked = kept; jobs.push(putKv("looked", looked)); }
    queue.filter(function (e) { return e.state === "saved" && e.done < limit; }).forEach(function (e) { jobs.push(dropEntry(e)); });
    queue = queue.filter(function (e) { return !(e.state === "saved" && e.done < limit); });
    return Promise.all(jobs);
  }

  // -- small DOM helpers ---------------------------------------------------------------------
  function el(tag, attrs, kids) {
    var n = document.createElement(tag);
    Object.keys(attrs || {}).forEach(function (k) {
      if (k === "text") n.textContent = attrs[k];
      else if (attrs[k] !== null && attrs[k] !== undefined && attrs[k] !== false) n.setAttribute(k, attrs[k] === true ? "" : attrs[k]);
    });
    (kids || []).forEach(function (c) { if (c) n.appendChild(c); });
    return n;
  }
  function label(name, fallback) { return labels[name] || fallback; }
  /* The page's own texts (`offline.<key>` of the registry's catalogs, in the page's language),
     `{name}` placeholders filled in from `params`. */
  function tr(key, params) {
    var text = texts[key] || key;
    return text.replace(/\{(\w+)\}/g, function (all, name) { return params && name in params ? String(params[name]) : all; });
  }
  function byId(id) { return document.getElementById(id); }
  function say(text) { byId("sync-message").textContent = text; }

  // -- what an entry's fields are ------------------------------------------------------------
  function personFields() {
    return [
      { name: "name", label: tr("name"), type: "text", required: true },
      { name: "dob", label: tr("dob"), type: "date", required: true },
      { name: "gender", label: tr("gender"), type: "select", required: true,
        options: [["Female", tr("female")], ["Male", tr("male")], ["Other", tr("other")]] },
      { name: "identity", label: tr("identity"), type: "text", required: true },
      { name: "phone", label: tr("phone"), type: "tel" },
    ];
  }

  function doseFields() {
    var d = data || { batches: [], programs: [], vaccinators: [] };
    return [
      { name: "batch", label: label("batch", "Batch"), type: "select", required: true,
        options: d.batches.map(function (b) { return [b.batch, tr("batch", { vaccine: b.vaccine_name || b.vaccine, batch: b.batch, left: leftOf(b), expiry: b.expiry })]; }) },
      { name: "program", label: label("program", "Programme"), type: "select",
        options: d.programs.map(function (p) { return [p.code, p.name]; }) },
      { name: "dose", label: label("dose", "Dose"), type: "number" },
      { name: "totalDoses", label: label("totalDoses", "Total doses"), type: "number" },
      { name: "date", label: label("date", "Date"), type: "datetime-local" },
      { name: "vaccinator", label: label("vaccinator", "Vaccinator"), type: "select",
        options: d.vaccinators.map(function (v) { return [v.code, v.name]; }) },
    ];
  }

  function leftOf(batch) {
    var queued = queue.filter(function (e) { return e.kind === "vaccination" && e.state !== "saved" && e.body.batch === batch.batch; }).length;
    return batch.left - queued;
  }

  function inputFor(f, value, prefixId) {
    var id = prefixId + f.name, input;
    if (f.type === "select") {
      input = el("select", { id: id, name: f.name });
      input.appendChild(el("option", { value: "", text: "—" }));
      f.options.forEach(function (o) { input.appendChild(el("option", { value: o[0], text: o[1], selected: String(value) === String(o[0]) })); });
    } else {
      input = el("input", { id: id, name: f.name, type: f.type, value: value === undefined || value === null ? "" : String(value) });
      if (f.type === "datetime-local") input.setAttribute("step", "60");
    }
    return el("div", { class: "field", "data-field": f.name }, [el("label", { for: id, text: f.label }), input]);
  }

  function showErrors(box, errors) {
    box.querySelectorAll(".error[data-from=offline]").forEach(function (n) { n.remove(); });
    box.querySelectorAll(".field.invalid").forEach(function (n) { n.classList.remove("invalid"); });
    var general = [];
    errors.forEach(function (err) {
      var name = String(err.pointer || "").split("/").filter(Boolean).pop() || "";
      var field = name && box.querySelector('[data-field="' + name + '"]');
      var p = el("p", { class: "error", "data-from": "offline", role: "alert", text: err.message });
      if (field) { field.classList.add("invalid"); field.insertBefore(p, field.querySelector("input,select")); }
      else general.push(p);
    });
    general.forEach(function (p) { box.insertBefore(p, box.firstChild); });
  }

  function readFields(box, fields) {
    var out = {};
    fields.forEach(function (f) {
      var input = box.querySelector('[name="' + f.name + '"]');
      var v = input ? input.value.trim() : "";
      if (v === "") return;
      if (f.type === "number") out[f.name] = /^-?\d+$/.test(v) ? parseInt(v, 10) : v;
      else if (f.type === "datetime-local") out[f.name] = instantOf(v);
      else out[f.name] = v;
    });
    return out;
  }

  // -- dates: the programme's time zone (the day's data), not the browser's -------------------
  var zoneFormat = null;
  function zoneOffset(ms) {
    /* Minutes east of UTC in the programme's zone at the instant `ms`: its IANA name through
       Intl when the browser knows it, else the offset the server sent, else the browser's. */
    var zone = data && data.timezone;
    if (zone && /\//.test(zone)) {
      try {
        if (!zoneFormat || zoneFormat.zone !== zone) {
          zoneFormat = { zone: zone, fmt: new Intl.DateTimeFormat("en-US", { timeZone: zone, hourCycle: "h23", year: "numeric", month: "2-digit", day: "2-digit", hour: "2-digit", minute: "2-digit" }) };
        }
        var p = {};
        zoneFormat.fmt.formatToParts(new Date(ms)).forEach(function (x) { p[x.type] = parseInt(x.value, 10); });
        var wall = Date.UTC(p.year, p.month - 1, p.day, p.hour, p.minute);
        return Math.round((wall - Math.floor(ms / 60000) * 60000) / 60000);
      } catch (err) { /* an unknown zone: the offset below */ }
    }
    if (data && typeof data.utcOffset === "number") return data.utcOffset;
    return -new Date(ms).getTimezoneOffset();
  }

  /* A `datetime-local` value for an instant (now without one), in the programme's zone. */
  function localInput(iso) {
    var ms = iso ? Date.parse(iso) : Date.now();
    if (isNaN(ms)) return "";
    return new Date(ms + zoneOffset(ms) * 60000).toISOString().slice(0, 16);
  }

  /* A `datetime-local` value, read in the programme's zone, as an RFC 3339 instant (as the
     server's form does); anything else is left for the validator to refuse. */
  function instantOf(text) {
    var m = /^(\d{4})-(\d{2})-(\d{2})T(\d{2}):(\d{2})(?::(\d{2}))?$/.exec(text);
    if (!m) return text;
    var wall = Date.UTC(+m[1], +m[2] - 1, +m[3], +m[4], +m[5], +(m[6] || 0));
    var guess = wall - zoneOffset(wall) * 60000;
    var ms = wall - zoneOffset(guess) * 60000;
    return isNaN(ms) ? text : new Date(ms).toISOString();
  }

  // -- people ----------------------------------------------------------------------------------
  function people() {
    var all = {}, list = [];
    (data ? data.recipients : []).concat(looked).forEach(function (p) { all[p.id] = Object.assign({}, all[p.id] || {}, p); });
    Object.keys(all).forEach(function (k) { list.push(all[k]); });
    queue.filter(function (e) { return e.kind === "recipient"; }).forEach(function (e) {
      list.push({ id: e.state === "saved" ? e.serverId : e.localId, name: e.body.name, born: (e.body.dob || "").slice(0, 4), gender: e.body.gender, doses: [], queued: true });
    });
    return list;
  }

  function nextDose(person, program) {
    var done = (person.doses || []).filter(function (d) { return d.program === program; }).map(function (d) { return d.dose || 0; });
    if (person.next && person.next.program === program && person.next.dose) done.push(person.next.dose - 1);
    queue.forEach(function (e) {
      if (e.kind === "vaccination" && e.state !== "refused" && e.body.program === program && e.body.recipient === person.id) done.push(e.body.dose || 0);
    });
    return Math.max.apply(null, [0].concat(done)) + 1;
  }

  function fitProgram(vaccine, person) {
    var fits = (data ? data.programs : []).filter(function (p) { return (p.vaccineIds || []).indexOf(vaccine) >= 0; });
    var earlier = (person && person.doses || []).map(function (d) { return d.program; });
    var hit = fits.filter(function (p) { return earlier.indexOf(p.code) >= 0; })[0] || fits[0];
    return hit ? hit.code : "";
  }

  // -- the offline form ------------------------------------------------------------------------
  var chosen = null; // a person, or "new"

  function renderEntry() {
    var box = byId("offline-entry");
    box.textContent = "";
    if (!data) {
      box.appendChild(el("p", { class: "error", id: "off-no-data", text: tr("no_data") }));
      return;
    }
    box.appendChild(el("h2", { text: tr("record_at", { facility: data.facility.name }) }));
    var find = el("div", { class: "field" }, [
      el("label", { for: "off-q", text: tr("find") }),
      el("input", { id: "off-q", type: "search", autocomplete: "off", maxlength: "100" }),
    ]);
    var found = el("ul", { id: "off-found", class: "found" });
    var enrol = el("button", { type: "button", id: "off-new", text: tr("enrol") });
    box.appendChild(find); box.appendChild(found); box.appendChild(enrol);
    var form = el("form", { id: "off-form", class: "record dose", novalidate: true });
    form.hidden = true;
    box.appendChild(form);
    byId("off-q").addEventListener("input", function () { listPeople(this.value); });
    enrol.addEventListener("click", function () { choose("new"); });
    form.addEventListener("submit", function (ev) { ev.preventDefault(); queueForm(form); });
  }

  function listPeople(text) {
    var list = byId("off-found");
    list.textContent = "";
    var q = text.trim().toLowerCase();
    if (!q) return;
    people().filter(function (p) {
      return (p.name || "").toLowerCase().indexOf(q) >= 0 || (p.enrollmentCode || "").toLowerCase() === q;
    }).slice(0, 10).forEach(function (p) {
      var b = el("button", { type: "button", class: "pick", "data-person": p.id, text: p.name + (p.born ? " · " + p.born : "") + (p.enrollmentCode ? " · " + p.enrollmentCode : "") + (p.queued ? " · " + tr("enrolled_offline") : "") });
      b.addEventListener("click", function () { choose(p); });
      list.appendChild(el("li", {}, [b]));
    });
    if (!list.children.length) list.appendChild(el("li", { class: "none", text: tr("nobody") }));
  }

  function choose(person) {
    chosen = person;
    var form = byId("off-form");
    form.textContent = "";
    form.hidden = false;
    if (person === "new") {
      var group = el("fieldset", { class: "group" }, [el("legend", { text: tr("new_person") })]);
      personFields().forEach(function (f) { group.appendChild(inputFor(f, "", "off-p-")); });
      form.appendChild(group);
    } else {
      form.appendChild(el("p", { class: "person-card", id: "off-chosen", text: person.name + (person.born ? " · " + person.born : "") }));
    }
    doseFields().forEach(function (f) { form.appendChild(inputFor(f, f.name === "date" ? localInput() : "", "off-v-")); });
    var batch = form.querySelector('[name="batch"]');
    batch.addEventListener("change", function () { fillDefaults(form); });
    if (data.batches.length === 1) { batch.value = data.batches[0].batch; }
    fillDefaults(form);
    form.appendChild(el("div", { class: "actions" }, [el("button", { type: "submit", class: "primary", id: "off-save", text: tr("save") })]));
    (form.querySelector("input,select") || form).focus();
  }

  function fillDefaults(form) {
    var code = form.querySelector('[name="batch"]').value;
    var batch = data.batches.filter(function (b) { return b.batch === code; })[0];
    if (!batch) return;
    var person = chosen === "new" ? null : chosen;
    var program = fitProgram(batch.vaccine, person);
    form.querySelector('[name="program"]').value = program;
    form.querySelector('[name="dose"]').value = person ? nextDose(person, program) : 1;
    form.querySelector('[name="totalDoses"]').value = batch.total || "";
  }

  function doseBody(fields, personId) {
    var body = Object.assign({}, fields, { recipient: personId, facility: data.facility.code });
    var batch = data.batches.filter(function (b) { return b.batch === body.batch; })[0];
    if (batch) body.vaccine = batch.vaccine;
    return body;
  }

  function queueForm(form) {
    var errors = [], entries = [], personId, name;
    if (chosen === "new") {
      var person = readFields(form, personFields());
      person.enrollmentType = "WALK_IN";
      errors = errors.concat(OfflineValidate.validate(data.schemas.recipient, person));
      personId = "local:" + crypto.randomUUID();
      name = person.name || "?";
      entries.push({ kind: "recipient", localId: personId, key: crypto.randomUUID(), body: person, state: "pending", owner: user, label: name, made: Date.now() });
    } else {
      personId = chosen.id; name = chosen.name;
    }
    var dose = doseBody(readFields(form, doseFields()), personId);
    errors = errors.concat(OfflineValidate.validate(data.schemas.vaccination, dose));
    showErrors(form, errors);
    if (errors.length) { (form.querySelector(".invalid input, .invalid select") || form).focus(); return Promise.resolve(); }
    entries.push({ kind: "vaccination", key: crypto.randomUUID(), body: dose, state: "pending", owner: user, label: name, made: Date.now() });
    return entries.reduce(function (p, e) { return p.then(function () { return saveEntry(e); }); }, Promise.resolve()).then(function () {
      return loadQueue();
    }).then(function () {
      chosen = null;
      form.hidden = true; form.textContent = "";
      byId("off-q").value = ""; byId("off-found").textContent = "";
      say(tr("saved_here", { name: name }));
      renderQueue();
    });
  }

  // -- the queue -----------------------------------------------------------------------------
  function waiting() { return queue.filter(function (e) { return e.state !== "saved" && e.owner === user; }).length; }

  function renderCount() {
    var n = waiting();
    byId("queue-count").textContent = String(n);
    var badge = byId("sync-count");
    if (!badge) {
      var nav = document.querySelector("header.top nav.account") || document.querySelector("header.top");
      if (!nav) return;
      badge = el("a", { id: "sync-count", class: "sync-count", href: "#offline" });
      nav.insertBefore(badge, nav.firstChild);
    }
    badge.textContent = tr("badge", { n: n });
    badge.hidden = n === 0;
  }

  function describe(e) {
    var b = e.body;
    if (e.kind === "recipient") return tr("enrol_entry", { name: (b.name || "?") + (b.dob ? " (" + b.dob + ")" : "") });
    var params = { dose: b.dose || "?", total: b.totalDoses, name: e.label, batch: b.batch || "?", date: b.date ? localInput(b.date).replace("T", " ") : "" };
    return tr(b.totalDoses ? "dose_of_entry" : "dose_entry", params);
  }

  function renderQueue() {
    var list = byId("queue");
    list.textContent = "";
    queue.slice().sort(function (a, b) { return a.seq - b.seq; }).forEach(function (e) {
      var state = e.state === "saved" ? "saved" : e.state === "refused" ? "refused" : "waiting";
      var item = el("li", { class: "entry " + state, "data-state": state, "data-kind": e.kind, "data-seq": e.seq }, [
        el("span", { class: "what", text: describe(e) }), el("span", { class: "state", text: " — " + tr(state === "waiting" && e.note ? e.note : state) }),
      ]);
      if (e.state === "saved" && e.kind === "vaccination") {
        item.appendChild(document.createTextNode(" "));
        item.appendChild(el("a", { class: "certificate", href: prefix + "/vaccination/" + encodeURIComponent(e.serverId) + "/certificate", text: tr("certificate") }));
      }
      if (e.state === "refused") item.appendChild(fixForm(e));
      list.appendChild(item);
    });
    var saved = queue.some(function (e) { return e.state === "saved"; });
    byId("clear-saved").hidden = !saved;
    renderCount();
  }

  function fixForm(e) {
    var fields = e.kind === "recipient" ? personFields() : doseFields();
    var form = el("form", { class: "fix", novalidate: true });
    fields.forEach(function (f) {
      var v = e.body[f.name];
      form.appendChild(inputFor(f, f.type === "datetime-local" ? localInput(v) : v, "fix-" + e.seq + "-"));
    });
    var resend = el("button", { type: "submit", class: "primary", text: tr("resend") });
    var discard = el("button", { type: "button", class: "discard", text: tr("discard") });
    form.appendChild(el("div", { class: "actions" }, [resend, discard]));
    showErrors(form, e.errors || []);
    form.addEventListener("submit", function (ev) {
      ev.preventDefault();
      var read = readFields(form, fields);
      var body = Object.assign({}, e.body, read);
      fields.forEach(function (f) { if (!(f.name in read)) delete body[f.name]; });
      if (e.kind === "vaccination") {
        var batch = data && data.batches.filter(function (b) { return b.batch === body.batch; })[0];
        if (batch) body.vaccine = batch.vaccine;
      }
      var schema = data && data.schemas[e.kind];
      var errors = schema ? OfflineValidate.validate(schema, body) : [];
      showErrors(form, errors);
      if (errors.length) return;
      // a refusal is kept under its key by the registry: the corrected entry is a new request
      Object.assign(e, { body: body, key: crypto.randomUUID(), state: "pending", errors: [], note: "" });
      saveEntry(e).then(function () { renderQueue(); return sync(); });
    });
    discard.addEventListener("click", function () {
      var gone = [e].concat(e.kind === "recipient" ? queue.filter(function (x) { return x.kind === "vaccination" && x.body.recipient === e.localId && x.state !== "saved"; }) : []);
      if (gone.length > 1 && !window.confirm(tr("discard_confirm", { n: gone.length - 1 }))) return;
      Promise.all(gone.map(dropEntry)).then(loadQueue).then(renderQueue);
    });
    return form;
  }

  // -- sync ------------------------------------------------------------------------------------
  function needSignIn() {
    var box = byId("sync-message");
    box.textContent = tr("session_ended") + " ";
    box.appendChild(el("a", { id: "sync-sign-in", href: prefix + "/login?next=" + encodeURIComponent(prefix + "/vaccinate"), text: tr("sign_in") }));
  }

  function send(e, body) {
    return fetch(api + "/" + e.kind, {
      method: "POST",
      credentials: "same-origin",
      headers: { "Content-Type": "application/json", "Accept": "application/json", "Idempotency-Key": e.key },
      body: JSON.stringify(body),
    });
  }

  /* Returns "stop" to end the round (connection, session, busy server), or nothing. */
  function syncOne(e) {
    var body = Object.assign({}, e.body);
    if (e.kind === "vaccination" && String(body.recipient).indexOf("local:") === 0) {
      var r = queue.filter(function (x) { return x.localId === body.recipient; })[0];
      if (!r || r.state !== "saved") { e.note = "waits_person"; return saveEntry(e); }
      body.recipient = e.body.recipient = r.serverId;
      e.label = r.body.name || e.label;
    }
    return send(e, body).then(function (resp) {
      var status = resp.status;
      if (status === 401) return "session";
      return resp.text().then(function (text) {
        var json = {};
        try { json = text ? JSON.parse(text) : {}; } catch (err) { json = {}; }
        if (status === 200 || status === 201) {
          Object.assign(e, { state: "saved", serverId: json.id, errors: [], note: "", done: Date.now() });
          return saveEntry(e);
        }
        if (status === 400 && /signed-in caller/.test(json.detail || "")) return "session";
        if (status === 409 && resp.headers.get("Retry-After")) return "busy";
        if (status >= 500 || status === 408 || status === 425 || status === 429) return "busy";
        var errors = Array.isArray(json.errors) && json.errors.length ? json.errors.map(function (x) {
          return { pointer: x.pointer || "", message: x.message || json.detail || "refused" };
        }) : [{ pointer: "", message: json.detail || json.title || ("refused (" + status + ")") }];
        Object.assign(e, { state: "refused", errors: errors, note: "" });
        return saveEntry(e);
      });
    }, function () { return "offline"; });
  }

  function round() {
    return fetch(api + "/auth/me", { credentials: "same-origin", cache: "no-store" }).then(function (resp) {
      return resp.json();
    }).then(function (me) {
      if (!me.authenticated || me.subject !== user) { needSignIn(); return; }
      online = true;
      return loadQueue().then(function () {
        var todo = queue.filter(function (e) { return e.state === "pending" && e.owner === user; }).sort(function (a, b) { return a.seq - b.seq; });
        var i = 0, sent = 0;
        function next() {
          if (i >= todo.length) return null;
          var e = todo[i++];
          return syncOne(e).then(function (outcome) {
            renderQueue();
            if (outcome === "session") { needSignIn(); return "stop"; }
            if (outcome === "offline") { say(tr("dropped")); return "stop"; }
            if (outcome === "busy") { say(tr("busy")); return "stop"; }
            sent++;
            return next();
          });
        }
        say(tr("sending", { n: todo.length }));
        return Promise.resolve(next()).then(function (stopped) {
          if (stopped === "stop") return;
          var refused = queue.filter(function (e) { return e.state === "refused"; }).length;
          var saved = queue.filter(function (e) { return e.state === "saved"; }).length;
          say(tr(refused ? "done_refused" : "done", { saved: saved, refused: refused }));
          root.setAttribute("data-synced", String(Date.now()));
        });
      });
    }, function () {
      say(tr("no_answer"));
    });
  }

  function sync() {
    if (syncing) return Promise.resolve();
    syncing = true;
    var go = navigator.locks ? navigator.locks.request("registry-offline-sync", round) : round();
    return Promise.resolve(go).finally(function () { syncing = false; renderQueue(); });
  }

  // -- start -------------------------------------------------------------------------------------
  function rememberChosen() {
    var card = document.querySelector("[data-offline-person]");
    if (!card) return Promise.resolve();
    var p = JSON.parse(card.getAttribute("data-offline-person"));
    p.savedAt = Date.now();
    looked = [p].concat(looked.filter(function (x) { return x.id !== p.id; })).slice(0, MAX_LOOKED);
    return putKv("looked", looked);
  }

  function fetchData() {
    return fetch(prefix + "/offline/data", { credentials: "same-origin", cache: "no-store", redirect: "manual" }).then(function (resp) {
      if (resp.ok) return resp.json().then(function (d) { data = d; online = true; return putKv("data", d); });
      online = true; // it answered: only the session (or the role) is missing
      if (resp.status === 401 || resp.type === "opaqueredirect") needSignIn();
    }, function () { online = false; });
  }

  function goOffline() {
    root.setAttribute("data-mode", "offline");
    document.querySelectorAll("main > section.step:not(#offline)").forEach(function (s) { s.hidden = true; });
    byId("offline-status").textContent = tr("status");
    byId("offline-entry").hidden = false;
    renderEntry();
  }

  function hookSignOut() {
    var form = document.querySelector('form[action$="/logout"]');
    if (!form) return;
    form.addEventListener("submit", function (ev) {
      if (form.getAttribute("data-cleared")) return;
      ev.preventDefault();
      var n = waiting();
      if (n && !window.confirm(tr("sign_out_confirm", { n: n }))) return;
      clearAll().catch(function () {}).then(function () { form.setAttribute("data-cleared", "1"); form.submit(); });
    });
  }

  function start() {
    if ("serviceWorker" in navigator) {
      navigator.serviceWorker.register(prefix + "/sw.js", { scope: prefix + "/" }).catch(function () {});
    }
    openDb().then(function (d) {
      db = d;
      return Promise.all([getKv("data"), getKv("looked"), loadQueue()]);
    }).then(function (got) {
      data = got[0]; looked = got[1] || [];
      return expire();
    }).then(rememberChosen).then(fetchData).then(function () {
      hookSignOut();
      byId("sync-now").addEventListener("click", function () { sync(); });
      byId("clear-saved").addEventListener("click", function () {
        Promise.all(queue.filter(function (e) { return e.state === "saved"; }).map(dropEntry)).then(loadQueue).then(renderQueue);
      });
      window.addEventListener("online", function () { sync(); });
      setInterval(function () { // a page left open past the age limit forgets the day too
        var had = data;
        expire().then(function () { if (had && !data && root.getAttribute("data-mode") === "offline") renderEntry(); renderQueue(); });
      }, 60000);
      root.hidden = false;
      renderQueue();
      if (!online) goOffline();
      else if (queue.some(function (e) { return e.state === "pending"; })) return sync();
    }).then(function () {
      root.setAttribute("data-ready", "true");
    }).catch(function (err) {
      root.hidden = false;
      say(tr("unavailable", { error: err }));
      root.setAttribute("data-ready", "true");
    });
  }

  start();
})();
