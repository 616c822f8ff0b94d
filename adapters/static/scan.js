/* pairgate Scan-QR page: session.create / session.join over Socket.IO, QR + countdown. */
(function () {
  "use strict";

  var TEXT = {
    en: {
      title: "Link a WhatsApp device",
      keyLabel: "Device key",
      keyHint: "Letters, digits, dot, dash, underscore.",
      nameLabel: "Device name",
      engineLabel: "Engine",
      start: "Start",
      qrHeading: "QR code",
      qrHelp: "On your phone open WhatsApp → Linked devices → Link a device, then point the camera at this code.",
      qrAlt: "QR code to scan with WhatsApp for device {key}",
      simHeading: "Simulator",
      simHelp: "This server runs the built-in simulator: these buttons play the phone.",
      simScan: "Simulate scan",
      simLogout: "Log out on the phone",
      simDrop: "Drop the connection",
      simRevoke: "Revoke the session",
      simDone: "Simulator: {action} done.",
      simFailed: "Simulator: {action} failed: {message}",
      countdown: "This code expires in {seconds} s.",
      countdownOver: "This code has expired; waiting for a new one…",
      relink: "Re-link this device",
      relinkConfirm: "Unlink the device linked as {key} and pair a new one? The offline device stops working until it is linked again.",
      tokenInQuery: "The access token was in the address after ?token=, which sends it to the server: it was not used. Open the page with #token=… instead.",
      state: {
        connecting: "Connecting to the server…",
        idle: "Connected. Enter a device key and press Start.",
        created: "Session {key} created. Waiting for the QR code…",
        qr: "Scan the QR code for {key} with WhatsApp on your phone.",
        authenticated: "Scanned: {key} is authenticated; connecting the device…",
        ready: "Linked: {key} is connected and ready.",
        disconnected: "Disconnected ({reason}): {explain}",
        error: "Error: {message}",
        offline: "Connection to the server lost; reconnecting…",
        linked: "{key} is still linked to a device that is offline. Starting again would unlink it: press “Re-link this device” only if that is what you want.",
        passkey: "Scanned. WhatsApp asks for this account's passkey before it links {key}. This page cannot give it: the app that started the pairing must send the passkey within {seconds} s, or the pairing ends.",
      },
      reasonOther: "the session ended.",
      passkeyFailed: {
        passkey_unanswered: "WhatsApp asked for the account's passkey and no answer came in time, so the pairing ended. Start again to get a new QR code.",
        passkey_rejected: "WhatsApp refused the passkey it was given, so the pairing ended.",
      },
    },
    id: {
      title: "Tautkan perangkat WhatsApp",
      keyLabel: "Kunci perangkat",
      keyHint: "Huruf, angka, titik, tanda hubung, garis bawah.",
      nameLabel: "Nama perangkat",
      engineLabel: "Mesin",
      start: "Mulai",
      qrHeading: "Kode QR",
      qrHelp: "Di ponsel buka WhatsApp → Perangkat tertaut → Tautkan perangkat, lalu arahkan kamera ke kode ini.",
      qrAlt: "Kode QR untuk dipindai dengan WhatsApp bagi perangkat {key}",
      simHeading: "Simulator",
      simHelp: "Server ini menjalankan simulator bawaan: tombol-tombol ini berperan sebagai ponsel.",
      simScan: "Simulasikan pindai",
      simLogout: "Keluar di ponsel",
      simDrop: "Putuskan koneksi",
      simRevoke: "Cabut sesi",
      simDone: "Simulator: {action} berhasil.",
      simFailed: "Simulator: {action} gagal: {message}",
      countdown: "Kode ini kedaluwarsa dalam {seconds} detik.",
      countdownOver: "Kode ini sudah kedaluwarsa; menunggu kode baru…",
      relink: "Tautkan ulang perangkat ini",
      relinkConfirm: "Putuskan tautan perangkat {key} dan tautkan perangkat baru? Perangkat yang offline tidak berfungsi sampai ditautkan lagi.",
      tokenInQuery: "Token akses ada di alamat setelah ?token=, sehingga terkirim ke server: token itu tidak dipakai. Buka halaman dengan #token=… sebagai gantinya.",
      state: {
        connecting: "Menghubungkan ke server…",
        idle: "Terhubung. Masukkan kunci perangkat lalu tekan Mulai.",
        created: "Sesi {key} dibuat. Menunggu kode QR…",
        qr: "Pindai kode QR untuk {key} dengan WhatsApp di ponsel Anda.",
        authenticated: "Terpindai: {key} terautentikasi; menghubungkan perangkat…",
        ready: "Tertaut: {key} terhubung dan siap.",
        disconnected: "Terputus ({reason}): {explain}",
        error: "Galat: {message}",
        offline: "Koneksi ke server terputus; menyambung ulang…",
        linked: "{key} masih tertaut ke perangkat yang sedang offline. Memulai ulang akan memutus tautannya: tekan “Tautkan ulang perangkat ini” hanya jika memang itu yang Anda inginkan.",
        passkey: "Terpindai. WhatsApp meminta passkey akun ini sebelum menautkan {key}. Halaman ini tidak dapat memberikannya: aplikasi yang memulai penautan harus mengirim passkey dalam {seconds} detik, atau penautan berakhir.",
      },
      reasonOther: "sesi berakhir.",
      passkeyFailed: {
        passkey_unanswered: "WhatsApp meminta passkey akun dan tidak ada jawaban tepat waktu, sehingga penautan berakhir. Mulai lagi untuk mendapatkan kode QR baru.",
        passkey_rejected: "WhatsApp menolak passkey yang diberikan, sehingga penautan berakhir.",
      },
    },
  };
  // The server's own words for what it knows: each disconnect reason explained per
  // language, and the reasons after which the device stays linked (offline).
  var PAGE = JSON.parse(document.getElementById("page-data").textContent);
  var STORAGE = "pairgate.scan";
  var TOKEN_STORAGE = "pairgate.token";
  var $ = function (id) { return document.getElementById(id); };
  var statusEl = $("status");
  var qrBox = $("qr-box");
  var qrImg = $("qr");
  var countdownEl = $("countdown");
  var form = $("start-form");
  var relinkButton = $("relink");

  var view = {
    lang: pickLanguage(),
    state: "connecting", // data-state of #status
    phase: "connecting", // which text: a state, or "idle"/"offline"
    key: null,
    reason: null,
    message: null,
    deadline: null, // ms timestamp when the shown QR expires
    seconds: null, // the seconds WhatsApp gives to answer its passkey request
    passkeyCause: null, // why the passkey step failed (session.passkey_failed), until the end is shown
  };
  var simulate = false;
  var connectedBefore = false;
  var pendingStart = null;
  var resuming = null; // the key this tab showed before a reload
  var eventsSinceRequest = 0;
  var relinkable = null; // a create refused because the key is still linked: may be re-sent

  function pickLanguage() {
    var saved = null;
    try { saved = localStorage.getItem("pairgate.lang"); } catch (e) { /* private mode */ }
    if (saved === "en" || saved === "id") return saved;
    var langs = navigator.languages && navigator.languages.length ? navigator.languages : [navigator.language || "en"];
    for (var i = 0; i < langs.length; i++) {
      var tag = String(langs[i]).toLowerCase();
      if (tag.indexOf("id") === 0 || tag.indexOf("in") === 0) return "id";
      if (tag.indexOf("en") === 0) return "en";
    }
    return "en";
  }

  function fill(template, values) {
    return template.replace(/\{(\w+)\}/g, function (_, name) {
      return values[name] == null ? "" : String(values[name]);
    });
  }

  function t() { return TEXT[view.lang]; }

  function render() {
    var text = t();
    document.documentElement.lang = view.lang;
    document.querySelectorAll("[data-i18n]").forEach(function (el) {
      el.textContent = text[el.getAttribute("data-i18n")];
    });
    document.querySelectorAll("[data-lang]").forEach(function (button) {
      button.setAttribute("aria-pressed", String(button.getAttribute("data-lang") === view.lang));
    });
    var reason = view.reason || "";
    var explain = (view.passkeyCause && text.passkeyFailed[view.passkeyCause]) ||
      PAGE.reasons[view.lang][reason] || text.reasonOther;
    statusEl.setAttribute("data-state", view.state);
    statusEl.textContent = fill(text.state[view.phase], {
      key: view.key, reason: reason, explain: explain, message: view.message, seconds: view.seconds,
    });
    qrImg.alt = fill(text.qrAlt, { key: view.key });
    var showQr = view.state === "qr" && !!qrImg.getAttribute("src");
    qrBox.hidden = !showQr;
    var active = !!view.key && view.state !== "connecting";
    document.querySelectorAll("#simulator button").forEach(function (b) { b.disabled = !active; });
    relinkButton.hidden = !relinkable;
    tick();
  }

  function tick() {
    if (view.state !== "qr" || view.deadline === null) {
      countdownEl.textContent = "";
      countdownEl.setAttribute("data-seconds", "");
      return;
    }
    var left = Math.max(0, Math.ceil((view.deadline - Date.now()) / 1000));
    countdownEl.setAttribute("data-seconds", String(left));
    countdownEl.textContent = left > 0 ? fill(t().countdown, { seconds: left }) : t().countdownOver;
  }
  setInterval(tick, 250);

  function setState(state, extra) {
    view.state = state;
    view.phase = state;
    view.reason = (extra && extra.reason) || null;
    view.message = (extra && extra.message) || null;
    if (state !== "disconnected") view.passkeyCause = null;
    if (state !== "qr") {
      view.deadline = null;
      qrImg.removeAttribute("src");
    }
    render();
  }

  // -- the connection ---------------------------------------------------------------

  // The access token comes after # (…/scan?key=k#token=…): a fragment is never sent to the
  // server. It moves to this tab's sessionStorage and out of the address bar at once, and
  // goes only into Socket.IO's auth and Authorization headers, never into a URL. A token
  // after ?token= was sent with the page request already: it is dropped, not used.
  var params = new URLSearchParams(location.search);
  var fragment = new URLSearchParams(location.hash.replace(/^#/, ""));
  var token = fragment.get("token");
  var tokenInQuery = params.has("token");
  try {
    if (token) sessionStorage.setItem(TOKEN_STORAGE, token);
    else token = sessionStorage.getItem(TOKEN_STORAGE);
  } catch (e) { /* private mode: this page load only */ }
  if (fragment.has("token") || tokenInQuery) {
    params.delete("token");
    fragment.delete("token");
    var clean = new URL(location.href);
    clean.search = params.toString();
    clean.hash = fragment.toString();
    history.replaceState(null, "", clean.toString());
  }
  var socket = io({ auth: token ? { token: token } : {}, transports: ["websocket", "polling"] });
  // The same token, for the simulator's HTTP endpoints.
  var authHeaders = token ? { authorization: "Bearer " + token } : {};
  window.__pairgateSocket = socket; // for tests and the curious

  function mine(data) { return data && view.key !== null && data.key === view.key; }

  socket.on("connect", function () {
    if (connectedBefore && view.key) {
      join(view.key);
    } else if (pendingStart) {
      var request = pendingStart;
      pendingStart = null;
      begin(request);
    } else if (!view.key) {
      view.state = view.phase = "idle";
      render();
    }
    connectedBefore = true;
  });
  socket.on("disconnect", function () {
    view.state = "connecting";
    view.phase = "offline";
    render();
  });
  socket.on("connect_error", function (err) {
    view.state = "error";
    view.phase = "error";
    view.message = err && err.message ? err.message : String(err);
    if (tokenInQuery && !token) view.message = t().tokenInQuery;
    render();
  });

  // Session events for this page's key; each one outdates any ack still in flight.
  function follow(event, apply) {
    socket.on(event, function (data) {
      if (!mine(data)) return;
      eventsSinceRequest++;
      relinkable = null;
      apply(data);
    });
  }
  follow("session.created", function () { setState("created"); });
  follow("session.qr", function (data) {
    qrImg.setAttribute("src", data.qr);
    view.deadline = Date.now() + Number(data.timeout) * 1000;
    view.state = view.phase = "qr";
    view.reason = view.message = null;
    render();
  });
  // WhatsApp's passkey step (an extension: docs/protocol.md): the code was scanned, no QR
  // is shown any more; WebAuthn for WhatsApp's rpId cannot run on this page's origin.
  follow("session.passkey_required", function (data) {
    view.seconds = Number(data.timeout);
    setState("passkey");
  });
  follow("session.passkey_failed", function (data) { view.passkeyCause = data.cause; });
  follow("session.authenticated", function () { setState("authenticated"); });
  follow("session.ready", function () { setState("ready"); });
  follow("session.disconnected", function (data) {
    setState("disconnected", { reason: data.reason });
  });
  socket.on("session.error", function (data) {
    if (data && data.key !== null && data.key !== undefined && data.key !== view.key) return;
    setState("error", { message: data && data.message });
  });

  // An ack tells the state at the time of the request: it only counts when no newer
  // session event for the key arrived first (events can overtake the ack).
  function applyAck(ack) {
    if (!ack || !ack.ok || eventsSinceRequest > 0) return;
    if (ack.state === "qr" && !qrImg.getAttribute("src")) {
      view.state = view.phase = "qr"; // the code itself comes as session.qr
      render();
      return;
    }
    setState(ack.state, { reason: ack.reason });
  }

  // session.create joins a live key and restarts an ended one, but never unlinks a device
  // on its own: a key still linked to one (offline, holding its credentials) is refused
  // unless `relink` says so, which only a click and a confirmation add (never a page load).
  function create(request) {
    view.key = request.key;
    eventsSinceRequest = 0;
    relinkable = null;
    var saved = { key: request.key, name: request.name, engine: request.engine };
    try { sessionStorage.setItem(STORAGE, JSON.stringify(saved)); } catch (e) { /* ignore */ }
    socket.emit("session.create", request, function (ack) {
      if (ack && !ack.ok && ack.error.code === "invalid_transition" && !request.relink) {
        return offerRelink(saved);
      }
      applyAck(ack);
    });
  }

  // Refused: follow the key (it may come back online by itself) and offer to re-link it
  // when it is the linked device that is offline.
  function offerRelink(request) {
    socket.emit("session.join", { key: request.key }, function (ack) {
      if (!ack || !ack.ok || eventsSinceRequest > 0) return;
      var linked = ack.state === "disconnected" && PAGE.linkedReasons.indexOf(ack.reason) >= 0;
      if (!linked) return applyAck(ack);
      relinkable = request;
      view.state = "disconnected";
      view.phase = "linked";
      render();
    });
  }

  relinkButton.addEventListener("click", function () {
    var request = relinkable;
    if (!request || !window.confirm(fill(t().relinkConfirm, { key: request.key }))) return;
    create(Object.assign({}, request, { relink: true }));
  });

  function join(key) {
    eventsSinceRequest = 0;
    socket.emit("session.join", { key: key }, applyAck);
  }

  // A reload of this tab's session rejoins it (and shows its truth, even "disconnected");
  // anything else, or a key the server does not know, creates.
  function begin(request) {
    if (!(resuming && resuming === request.key)) return create(request);
    resuming = null;
    view.key = request.key;
    eventsSinceRequest = 0;
    socket.emit("session.join", { key: request.key }, function (ack) {
      if (ack && ack.ok) applyAck(ack);
      else create(request);
    });
  }

  function start(request) {
    $("key").value = request.key;
    $("name").value = request.name;
    $("engine").value = request.engine;
    var url = new URL(location.href);
    url.searchParams.set("key", request.key);
    url.searchParams.set("name", request.name);
    url.searchParams.set("engine", request.engine);
    history.replaceState(null, "", url.toString());
    qrImg.removeAttribute("src");
    view.deadline = null;
    if (socket.connected) begin(request);
    else pendingStart = request;
  }

  function readForm() {
    var key = $("key").value.trim();
    return {
      key: key,
      name: $("name").value.trim() || key,
      engine: $("engine").value.trim() || "baileys",
    };
  }

  form.addEventListener("submit", function (event) {
    event.preventDefault();
    if (!form.reportValidity()) return;
    start(readForm());
  });

  // -- language switch --------------------------------------------------------------

  document.querySelectorAll("[data-lang]").forEach(function (button) {
    button.addEventListener("click", function () {
      view.lang = button.getAttribute("data-lang");
      try { localStorage.setItem("pairgate.lang", view.lang); } catch (e) { /* ignore */ }
      render();
    });
  });

  // -- simulator --------------------------------------------------------------------

  function simulatorCall(action) {
    var key = view.key;
    var base = "/api/simulator/devices/" + encodeURIComponent(key) + "/";
    var label = t()["sim" + action.charAt(0).toUpperCase() + action.slice(1)];
    var body = Promise.resolve({});
    if (action === "scan") {
      body = fetch(base + "code", { cache: "no-store", headers: authHeaders }).then(function (r) { return r.json(); })
        .then(function (answer) {
          if (!answer.ok) throw new Error(answer.error.message);
          return { code: answer.code };
        });
    }
    body.then(function (payload) {
      return fetch(base + action, {
        method: "POST",
        headers: Object.assign({ "content-type": "application/json" }, authHeaders),
        body: JSON.stringify(payload),
      }).then(function (r) { return r.json(); });
    }).then(function (answer) {
      if (!answer.ok) throw new Error(answer.error.message);
      $("sim-result").textContent = fill(t().simDone, { action: label });
    }).catch(function (err) {
      $("sim-result").textContent = fill(t().simFailed, { action: label, message: err.message });
    });
  }

  document.querySelectorAll("#simulator button").forEach(function (button) {
    button.addEventListener("click", function () {
      if (view.key) simulatorCall(button.getAttribute("data-action"));
    });
  });

  fetch("/api/info", { cache: "no-store" }).then(function (r) { return r.json(); })
    .then(function (info) {
      simulate = !!info.simulate;
      $("simulator").hidden = !simulate;
    }).catch(function () { /* no simulator controls */ });

  // -- start-up: prefill from the URL (or this tab's last session) and maybe start ----

  var saved = null;
  try { saved = JSON.parse(sessionStorage.getItem(STORAGE) || "null"); } catch (e) { saved = null; }
  var key = params.get("key") || (saved && saved.key) || "";
  var fromSaved = !params.get("key") && saved;
  resuming = saved && saved.key === key ? key : null;
  $("key").value = key;
  $("name").value = params.get("name") || (fromSaved ? saved.name : "") || "";
  $("engine").value = params.get("engine") || (fromSaved ? saved.engine : "") || "baileys";
  render();
  if (key) start(readForm());
})();
