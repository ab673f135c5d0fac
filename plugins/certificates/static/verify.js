/*
 * The verification page: reads a QR code (camera, picture, pasted text), asks the registry for
 * the verdict when it can reach it, verifies on this device (VerifyCore) when it cannot, and
 * shows the outcome. Keeps the page working offline: a service worker (sw.js) serves the page
 * and its files from Cache Storage when the network fails, and the trust bundle (keys, status
 * lists) is saved in Cache Storage (localStorage where Cache Storage is missing).
 */
(function () {
  "use strict";

  const Core = window.VerifyCore;
  const DATA = JSON.parse(document.getElementById("verify-data").textContent);
  const M = DATA.messages;
  const TRUST_CACHE = "verify-trust";
  const TRUST_KEY = "verify-trust";
  const PAGE_CACHE = "verify-page-" + DATA.version;
  const $ = (id) => document.getElementById(id);

  let trust = null; // {savedAt, bundle}
  let scanning = null; // {stream, timer}

  function t(key, params) {
    let text = M[key] || key;
    for (const [name, value] of Object.entries(params || {})) text = text.split("{" + name + "}").join(String(value));
    return text;
  }

  // -- offline: the page's files and the trust bundle ----------------------------------------

  async function keepPageOffline() {
    if (!("serviceWorker" in navigator) || !window.caches) return;
    try {
      await navigator.serviceWorker.register(DATA.urls.worker, { scope: DATA.urls.scope });
      const cache = await caches.open(PAGE_CACHE);
      await cache.addAll([location.pathname + location.search, ...DATA.assets]);
    } catch (exc) {
      // no offline copy (private mode, storage full): the page still works online
    }
  }

  async function saveTrust(saved) {
    const text = JSON.stringify(saved);
    if (window.caches) {
      const cache = await caches.open(TRUST_CACHE);
      await cache.put(DATA.urls.trust, new Response(text, { headers: { "Content-Type": "application/json" } }));
    } else {
      localStorage.setItem(TRUST_KEY, text);
    }
  }

  async function loadSavedTrust() {
    try {
      if (window.caches) {
        const hit = await (await caches.open(TRUST_CACHE)).match(DATA.urls.trust);
        return hit ? await hit.json() : null;
      }
      const text = localStorage.getItem(TRUST_KEY);
      return text ? JSON.parse(text) : null;
    } catch (exc) {
      return null;
    }
  }

  async function refreshTrust() {
    try {
      const resp = await fetch(DATA.urls.trust, { cache: "no-store" });
      if (!resp.ok) throw new Error("HTTP " + resp.status);
      trust = { savedAt: Date.now(), bundle: await resp.json() };
      await saveTrust(trust).catch(() => {});
    } catch (exc) {
      trust = trust || (await loadSavedTrust());
    }
    showCache();
  }

  function showCache() {
    const line = $("cache");
    line.classList.remove("old");
    if (!trust) {
      line.textContent = t("cache_none");
      return;
    }
    const saved = new Date(trust.savedAt);
    let text = t("cache_time", { time: saved.toLocaleString(DATA.locale) });
    if (Date.now() - trust.savedAt > DATA.maxCacheAge * 1000) {
      line.classList.add("old");
      text += " " + t("cache_old", { hours: Math.round(DATA.maxCacheAge / 3600) });
    }
    line.textContent = text;
    line.dataset.savedAt = String(trust.savedAt);
  }

  function showNetwork() {
    const el = $("network");
    el.textContent = navigator.onLine ? el.dataset.online : el.dataset.offline;
  }

  // -- verifying -----------------------------------------------------------------------------

  class NoNetwork extends Error {}

  /** The registry's verdict, or NoNetwork when it cannot be reached. */
  async function serverVerdict(body) {
    let resp;
    try {
      resp = await fetch(DATA.urls.verify, {
        method: "POST",
        headers: { "Content-Type": "application/json", Accept: "application/json" },
        body: JSON.stringify(body),
        cache: "no-store",
      });
    } catch (exc) {
      throw new NoNetwork(exc.message);
    }
    const answer = await resp.json().catch(() => ({}));
    if (resp.ok) {
      // the registry's reasons are English: the plain outcomes are said in the page's language,
      // but a VALID with caveats (another issuer's revocation not checked) keeps its own reason
      const caveats = answer.status === "VALID" && (answer.warnings || []).length > 0;
      const plain = caveats ? null : { VALID: "valid", REVOKED: "revoked", SUSPENDED: "suspended" }[answer.status];
      const reason = plain ? { key: plain, params: {} } : null;
      return { status: answer.status, detail: plain ? null : answer.reason, reason, issuer: answer.issuer };
    }
    if (resp.status >= 500) throw new NoNetwork("HTTP " + resp.status);
    const why = ((answer.errors || [])[0] || {}).message || answer.detail || "HTTP " + resp.status;
    return { status: "INVALID", detail: why };
  }

  async function verify(payload) {
    showBusy();
    const bundle = trust ? trust.bundle : {};
    let found;
    try {
      found = await Core.read(payload, bundle);
    } catch (exc) {
      show({ status: "INVALID", reason: { key: "unreadable", params: { detail: exc.message } } }, null, false);
      return;
    }
    try {
      show(await serverVerdict(Core.serverBody(found, payload)), found.facts, true);
      return;
    } catch (exc) {
      if (!(exc instanceof NoNetwork)) throw exc;
    }
    if (!trust) await refreshTrust();
    if (!trust) {
      show({ status: "UNKNOWN", detail: t("cache_none") }, found.facts, false);
      return;
    }
    show(await Core.verifyOffline(found, payload, trust.bundle), found.facts, false);
  }

  function showBusy() {
    $("error").hidden = true;
    $("result").hidden = false;
    const v = $("verdict");
    v.className = "verdict UNKNOWN";
    v.textContent = t("working");
    $("result").dataset.status = "";
    for (const id of ["name", "dose", "vaccine", "date", "issuer", "reason", "format"]) $("fact-" + id).textContent = "";
    $("checked-by").textContent = "";
  }

  function reasonText(result) {
    if (result.detail) return result.detail;
    const reason = result.reason || {};
    const warnings = (result.warnings || []).map((w) => (typeof w === "string" ? w : t("reason." + w.key)));
    return [t("reason." + reason.key, reason.params), ...warnings].join(" ");
  }

  function show(result, facts, online) {
    const status = ["VALID", "REVOKED", "SUSPENDED", "EXPIRED", "INVALID"].includes(result.status) ? result.status : "UNKNOWN";
    const v = $("verdict");
    v.className = "verdict " + status;
    v.textContent = t("status." + status);
    $("result").dataset.status = status;
    $("result").dataset.checked = online ? "online" : "offline";
    facts = facts || {};
    $("fact-name").textContent = facts.name || "";
    $("fact-dose").textContent = facts.dose ? (facts.totalDoses ? t("dose_of", { dose: facts.dose, total: facts.totalDoses }) : facts.dose) : "";
    $("fact-vaccine").textContent = facts.vaccine || "";
    $("fact-date").textContent = facts.date ? facts.date.slice(0, 10) : "";
    $("fact-issuer").textContent = facts.issuer || result.issuer || "";
    $("fact-reason").textContent = reasonText(result);
    $("fact-format").textContent = facts.format || "";
    $("checked-by").textContent = online ? t("checked_online") : t("checked_offline");
    $("result").hidden = false;
    $("result").scrollIntoView({ block: "nearest" });
  }

  function showError(message) {
    $("result").hidden = true;
    const el = $("error");
    el.textContent = message;
    el.hidden = false;
  }

  // -- reading QR codes ----------------------------------------------------------------------

  const canvas = document.createElement("canvas");
  const context = canvas.getContext("2d", { willReadFrequently: true });

  /** The QR content in a picture or video frame: {text} for shc:/ and HC1:, {bytes} else. */
  function decodeFrame(source, width, height) {
    const scale = Math.min(1, 1600 / Math.max(width, height));
    canvas.width = Math.max(1, Math.round(width * scale));
    canvas.height = Math.max(1, Math.round(height * scale));
    context.drawImage(source, 0, 0, canvas.width, canvas.height);
    const image = context.getImageData(0, 0, canvas.width, canvas.height);
    const found = window.jsQR(image.data, image.width, image.height, { inversionAttempts: "attemptBoth" });
    if (!found) return null;
    const text = found.data || "";
    if (text.startsWith("shc:/") || text.startsWith("HC1:")) return { text };
    return { bytes: Uint8Array.from(found.binaryData) };
  }

  /** BarcodeDetector where the browser has one: its text only (binary payloads lose bytes in
   * its text decoding, so those are read again by jsQR). */
  async function detectText(source) {
    if (!("BarcodeDetector" in window)) return null;
    try {
      const formats = await window.BarcodeDetector.getSupportedFormats();
      if (!formats.includes("qr_code")) return null;
      const [code] = await new window.BarcodeDetector({ formats: ["qr_code"] }).detect(source);
      const text = code ? code.rawValue : "";
      return text.startsWith("shc:/") || text.startsWith("HC1:") ? { text } : null;
    } catch (exc) {
      return null;
    }
  }

  async function serverDecode(file) {
    if (!["image/png", "image/jpeg"].includes(file.type)) return null;
    if (file.size > DATA.maxImageBytes) {
      showError(t("too_large", { max: DATA.maxImageBytes }));
      return undefined;
    }
    let resp;
    try {
      resp = await fetch(DATA.urls.decodeImage, { method: "POST", headers: { "Content-Type": file.type }, body: file });
    } catch (exc) {
      return null; // offline: nothing more to try
    }
    if (!resp.ok) return null;
    const answer = await resp.json();
    return answer.text ? { text: answer.text } : { bytes: Core.b64decode(answer.qr) };
  }

  async function fromPicture(file) {
    let payload = null;
    try {
      const bitmap = await createImageBitmap(file);
      payload = (await detectText(bitmap)) || decodeFrame(bitmap, bitmap.width, bitmap.height);
      bitmap.close();
    } catch (exc) {
      payload = null; // a format this browser cannot draw: the server may read it
    }
    if (!payload) payload = await serverDecode(file);
    if (payload === undefined) return;
    if (!payload) {
      showError(t("no_qr"));
      return;
    }
    await verify(payload);
  }

  async function startCamera() {
    const video = $("video");
    let stream;
    try {
      stream = await navigator.mediaDevices.getUserMedia({
        video: { facingMode: { ideal: "environment" }, width: { ideal: 1280 }, height: { ideal: 720 } },
        audio: false,
      });
    } catch (exc) {
      showError(t("camera_unavailable", { reason: exc.message || exc.name }));
      return;
    }
    video.srcObject = stream;
    await video.play().catch(() => {});
    $("viewfinder").hidden = false;
    $("camera-start").hidden = true;
    $("camera-stop").hidden = false;
    scanning = { stream, timer: null };
    const tick = async () => {
      if (!scanning) return;
      let payload = null;
      if (video.readyState >= 2 && video.videoWidth) {
        payload = (await detectText(video)) || decodeFrame(video, video.videoWidth, video.videoHeight);
      }
      if (!scanning) return;
      if (payload) {
        stopCamera();
        await verify(payload);
        return;
      }
      scanning.timer = setTimeout(tick, 150);
    };
    tick();
  }

  function stopCamera() {
    if (!scanning) return;
    clearTimeout(scanning.timer);
    for (const track of scanning.stream.getTracks()) track.stop();
    scanning = null;
    $("video").srcObject = null;
    $("viewfinder").hidden = true;
    $("camera-start").hidden = false;
    $("camera-stop").hidden = true;
  }

  // -- wiring --------------------------------------------------------------------------------

  function pasted(text) {
    text = text.trim();
    if (text.length > DATA.maxText && !text.startsWith("{")) {
      showError(t("error", { reason: "max " + DATA.maxText }));
      return;
    }
    verify({ text });
  }

  $("camera-start").addEventListener("click", startCamera);
  $("camera-stop").addEventListener("click", stopCamera);
  $("picture").addEventListener("change", (event) => {
    const file = event.target.files[0];
    event.target.value = "";
    if (file) fromPicture(file);
  });
  $("paste-form").addEventListener("submit", (event) => {
    event.preventDefault();
    pasted($("paste").value);
  });
  window.addEventListener("online", () => {
    showNetwork();
    refreshTrust();
  });
  window.addEventListener("offline", showNetwork);

  showNetwork();
  const ready = Promise.all([refreshTrust(), keepPageOffline()]);
  ready.then(() => document.body.setAttribute("data-ready", "true"));
})();
