/* pairgate console: the caller's sessions (REST, filtered and paged by the server), live
   over Socket.IO (console.watch → session.changed), each session's history as a timeline. */
(function () {
  "use strict";

  var TEXT = {
    en: {
      title: "pairgate console", forgetToken: "Change token",
      tokenHeading: "Access token",
      tokenHelp: "This server asks for an access token. It is kept in this tab only (sessionStorage), never in the address.",
      tokenLabel: "Token", tokenSave: "Use this token", tokenRefused: "The server refused this token.",
      countsHeading: "At a glance", lastHourHeading: "Pairings in the last hour",
      started: "started", completed: "completed", expired: "expired",
      devicesHeading: "Devices", searchLabel: "Search key or name", stateLabel: "State",
      engineLabel: "Engine", apply: "Apply", any: "any",
      devicesCaption: "Your sessions, most recently changed first",
      colKey: "Key", colName: "Name", colEngine: "Engine", colState: "State",
      colChanged: "Last change", colReason: "Last reason",
      empty: "No sessions match.", more: "Load more", shown: "{count} shown",
      linkHeading: "Link a new device", keyLabel: "Device key", nameLabel: "Device name",
      link: "Link (opens Scan QR)",
      open: "Open the timeline of {key}",
      timelineOf: "Timeline of {key}", logout: "Log out", delete: "Delete",
      export: "Export JSON", close: "Close",
      phoneLabel: "Phone number (international, digits only)", pairCode: "Request a pairing code",
      confirmLogout: "Log out {key}? The device is unlinked from WhatsApp.",
      confirmDelete: "Delete {key}? The session is stopped and its credentials forgotten.",
      confirmPair: "Start pairing {key} by phone number {phone}?",
      done: "{action}: done ({key} is now {state}).",
      refused: "{action} refused ({code}): {message}",
      failed: "{action} failed: {message}",
      pairCodeIs: "Pairing code for {key}: {code} (type it on the phone: Linked devices → Link with phone number).",
      pairRequested: "Pairing by phone started for {key}; the code follows.",
      timeToScan: "Time to scan", timeToReady: "Time to ready", codesBeforeScan: "Codes shown before the scan",
      left: "left {from}", now: "now {state}", after: "+{duration} after the step before",
      stateAt: "State at this point", atState: "Right after version {version}: {state}{reason}.",
      offline: "Live updates paused: reconnecting…", live: "Live updates on.",
      loading: "Loading…",
      states: { created: "created", qr: "showing QR", authenticated: "authenticated", ready: "ready", disconnected: "disconnected" },
    },
    id: {
      title: "Konsol pairgate", forgetToken: "Ganti token",
      tokenHeading: "Token akses",
      tokenHelp: "Server ini meminta token akses. Token hanya disimpan di tab ini (sessionStorage), tidak pernah di alamat.",
      tokenLabel: "Token", tokenSave: "Pakai token ini", tokenRefused: "Server menolak token ini.",
      countsHeading: "Sekilas", lastHourHeading: "Penautan dalam satu jam terakhir",
      started: "dimulai", completed: "selesai", expired: "kedaluwarsa",
      devicesHeading: "Perangkat", searchLabel: "Cari kunci atau nama", stateLabel: "Status",
      engineLabel: "Mesin", apply: "Terapkan", any: "semua",
      devicesCaption: "Sesi Anda, yang terakhir berubah lebih dulu",
      colKey: "Kunci", colName: "Nama", colEngine: "Mesin", colState: "Status",
      colChanged: "Perubahan terakhir", colReason: "Alasan terakhir",
      empty: "Tidak ada sesi yang cocok.", more: "Muat lagi", shown: "{count} ditampilkan",
      linkHeading: "Tautkan perangkat baru", keyLabel: "Kunci perangkat", nameLabel: "Nama perangkat",
      link: "Tautkan (buka Pindai QR)",
      open: "Buka linimasa {key}",
      timelineOf: "Linimasa {key}", logout: "Keluar", delete: "Hapus",
      export: "Ekspor JSON", close: "Tutup",
      phoneLabel: "Nomor telepon (internasional, angka saja)", pairCode: "Minta kode penautan",
      confirmLogout: "Keluarkan {key}? Perangkat diputus dari WhatsApp.",
      confirmDelete: "Hapus {key}? Sesi dihentikan dan kredensialnya dilupakan.",
      confirmPair: "Mulai menautkan {key} dengan nomor {phone}?",
      done: "{action}: berhasil ({key} sekarang {state}).",
      refused: "{action} ditolak ({code}): {message}",
      failed: "{action} gagal: {message}",
      pairCodeIs: "Kode penautan untuk {key}: {code} (ketik di ponsel: Perangkat tertaut → Tautkan dengan nomor telepon).",
      pairRequested: "Penautan dengan nomor telepon dimulai untuk {key}; kodenya menyusul.",
      timeToScan: "Waktu sampai dipindai", timeToReady: "Waktu sampai siap", codesBeforeScan: "Kode yang tampil sebelum dipindai",
      left: "meninggalkan {from}", now: "sekarang {state}", after: "+{duration} setelah langkah sebelumnya",
      stateAt: "Status pada titik ini", atState: "Tepat setelah versi {version}: {state}{reason}.",
      offline: "Pembaruan langsung dijeda: menyambung ulang…", live: "Pembaruan langsung aktif.",
      loading: "Memuat…",
      states: { created: "dibuat", qr: "menampilkan QR", authenticated: "terautentikasi", ready: "siap", disconnected: "terputus" },
    },
  };
  var PAGE = JSON.parse(document.getElementById("page-data").textContent);
  var TOKEN_STORAGE = "pairgate.token";
  var $ = function (id) { return document.getElementById(id); };
  var lang = pickLanguage();
  var token = null;
  try { token = sessionStorage.getItem(TOKEN_STORAGE); } catch (e) { /* private mode */ }
  var filters = { q: "", state: "", engine: "" };
  var rows = new Map(); // key → row as the server last described it
  var next = null; // the cursor of the page after the last one shown
  var opened = null; // the key whose timeline is open
  var history = []; // its records
  var socket = null;

  function pickLanguage() {
    var saved = null;
    try { saved = localStorage.getItem("pairgate.lang"); } catch (e) { /* private mode */ }
    if (saved === "en" || saved === "id") return saved;
    var tag = String((navigator.languages || [navigator.language || "en"])[0]).toLowerCase();
    return tag.indexOf("id") === 0 || tag.indexOf("in") === 0 ? "id" : "en";
  }
  function t() { return TEXT[lang]; }
  function fill(template, values) {
    return template.replace(/\{(\w+)\}/g, function (_, name) {
      return values[name] == null ? "" : String(values[name]);
    });
  }
  function el(tag, attrs, text) {
    var node = document.createElement(tag);
    Object.keys(attrs || {}).forEach(function (name) { node.setAttribute(name, attrs[name]); });
    if (text != null) node.textContent = text;
    return node;
  }
  function stateText(state) { return t().states[state] || state; }

  // -- the HTTP API: the token only ever in the Authorization header -------------------

  function api(method, path, body) {
    var headers = { accept: "application/json" };
    if (token) headers.authorization = "Bearer " + token;
    if (body !== undefined) headers["content-type"] = "application/json";
    return fetch(path, {
      method: method, headers: headers, cache: "no-store",
      body: body === undefined ? undefined : JSON.stringify(body),
    }).then(function (response) {
      return response.json().catch(function () { return {}; }).then(function (answer) {
        if (response.status === 401) askForToken(true);
        if (!answer.ok) {
          var error = new Error((answer.error && answer.error.message) || response.statusText);
          error.code = (answer.error && answer.error.code) || String(response.status);
          throw error;
        }
        return answer;
      });
    });
  }

  function askForToken(refused) {
    $("token-form").hidden = false;
    $("notice").textContent = refused && token ? t().tokenRefused : "";
    $("token").focus();
  }

  $("token-form").addEventListener("submit", function (event) {
    event.preventDefault();
    token = $("token").value.trim();
    $("token").value = "";
    try { sessionStorage.setItem(TOKEN_STORAGE, token); } catch (e) { /* this page only */ }
    $("token-form").hidden = true;
    start();
  });
  $("forget-token").addEventListener("click", function () {
    try { sessionStorage.removeItem(TOKEN_STORAGE); } catch (e) { /* ignore */ }
    token = null;
    if (socket) socket.disconnect();
    askForToken(false);
  });

  // -- devices ------------------------------------------------------------------------

  function query(after) {
    var params = new URLSearchParams();
    if (filters.q) params.set("q", filters.q);
    if (filters.state) params.set("state", filters.state);
    if (filters.engine) params.set("engine", filters.engine);
    params.set("limit", String(PAGE.pageSize));
    if (after) params.set("after", after);
    return "/api/sessions?" + params.toString();
  }

  function load(after) {
    var started = performance.now();
    return api("GET", query(after)).then(function (answer) {
      if (!after) { rows.clear(); $("rows").textContent = ""; }
      answer.sessions.forEach(function (row) { rows.set(row.key, row); $("rows").appendChild(rowElement(row)); });
      next = answer.next;
      window.__consoleRendered = performance.now() - started; // for the benchmark
      if (window.__firstPageAt == null) window.__firstPageAt = performance.now();
      window.__consoleLoads = (window.__consoleLoads || 0) + 1;
      showPaging();
    });
  }

  function showPaging() {
    $("more").hidden = !next;
    $("empty").hidden = rows.size > 0;
    $("devices").setAttribute("data-count", String(rows.size));
  }

  function rowElement(row) {
    var tr = el("tr", { "data-key": row.key, "data-state": row.state, "data-version": String(row.version) });
    var keyCell = el("td");
    var open = el("button", { type: "button", class: "link", "aria-label": fill(t().open, { key: row.key }) }, row.key);
    open.addEventListener("click", function () { openTimeline(row.key); });
    keyCell.appendChild(open);
    tr.appendChild(keyCell);
    tr.appendChild(el("td", {}, row.name));
    tr.appendChild(el("td", {}, row.engine));
    var state = el("td");
    state.appendChild(el("span", { class: "state state-" + row.state }, stateText(row.state)));
    tr.appendChild(state);
    var changed = el("td");
    changed.appendChild(el("time", { datetime: row.updated_at, title: row.updated_at }, ago(row.updated_at)));
    tr.appendChild(changed);
    tr.appendChild(el("td", { class: "reason" }, row.reason || "—"));
    return tr;
  }

  function ago(iso) {
    var seconds = Math.round((Date.parse(iso) - Date.now()) / 1000);
    var format = new Intl.RelativeTimeFormat(lang, { numeric: "auto" });
    var steps = [[60, "second"], [3600, "minute"], [86400, "hour"], [Infinity, "day"]];
    var size = 1;
    for (var i = 0; i < steps.length; i++) {
      if (Math.abs(seconds) < steps[i][0]) return format.format(Math.round(seconds / size), steps[i][1]);
      size = steps[i][0];
    }
    return iso;
  }
  setInterval(function () {
    document.querySelectorAll("#rows time").forEach(function (time) {
      time.textContent = ago(time.getAttribute("datetime"));
    });
  }, 30000);

  // A change heard live: the row moves to the top if it still matches the filters the
  // server applied (the same rules, for one row), or leaves the table.
  function matches(row) {
    var q = filters.q;
    return (!filters.state || row.state === filters.state) &&
      (!filters.engine || row.engine === filters.engine) &&
      (!q || row.key.indexOf(q) === 0 || row.name.indexOf(q) === 0);
  }
  function changed(row) {
    var known = rows.get(row.key);
    if (known && known.version >= row.version) return;
    var old = document.querySelector('#rows tr[data-key="' + CSS.escape(row.key) + '"]');
    if (old) old.remove();
    rows.delete(row.key);
    if (matches(row)) {
      rows.set(row.key, row);
      $("rows").insertBefore(rowElement(row), $("rows").firstChild);
    }
    showPaging();
    soon(loadStats);
    if (row.key === opened) soon(refreshTimeline);
  }

  var pending = new Map();
  function soon(task) { // once per burst of changes
    if (pending.has(task)) return;
    pending.set(task, setTimeout(function () { pending.delete(task); task(); }, 300));
  }

  $("filters").addEventListener("submit", function (event) {
    event.preventDefault();
    filters = { q: $("q").value.trim(), state: $("state-filter").value, engine: $("engine-filter").value };
    load(null).catch(showError(t().apply));
  });
  $("more").addEventListener("click", function () { load(next).catch(showError(t().more)); });

  // -- counts -------------------------------------------------------------------------

  function loadStats() {
    return api("GET", "/api/stats").then(function (answer) {
      var list = $("counts");
      list.textContent = "";
      PAGE.states.forEach(function (state) {
        var item = el("li", { "data-state": state, class: "state-" + state });
        item.appendChild(el("strong", { "data-count": String(answer.states[state]) }, String(answer.states[state])));
        item.appendChild(document.createTextNode(" " + stateText(state)));
        list.appendChild(item);
      });
      var recent = $("recent");
      recent.textContent = "";
      ["started", "completed", "expired"].forEach(function (kind) {
        var item = el("li", { "data-kind": kind });
        item.appendChild(el("strong", { "data-count": String(answer.last_hour[kind]) }, String(answer.last_hour[kind])));
        item.appendChild(document.createTextNode(" " + t()[kind]));
        recent.appendChild(item);
      });
    });
  }

  // -- a session's timeline -----------------------------------------------------------

  function readHistory(key) {
    var records = [];
    function page(after) {
      var path = "/api/sessions/" + encodeURIComponent(key) + "/history?limit=200" + (after ? "&after=" + after : "");
      return api("GET", path).then(function (answer) {
        records = records.concat(answer.events);
        return answer.next ? page(answer.next) : records;
      });
    }
    return page(null);
  }

  function openTimeline(key) {
    opened = key;
    $("timeline-box").hidden = false;
    $("timeline-heading").textContent = fill(t().timelineOf, { key: key });
    $("at-state").textContent = "";
    return refreshTimeline().then(function () { $("timeline-box").focus(); }).catch(showError(t().timelineOf));
  }

  function refreshTimeline() {
    var key = opened;
    return readHistory(key).then(function (records) {
      if (key !== opened) return;
      history = records;
      drawTimeline();
    });
  }

  function seconds(ms) { return (ms / 1000).toFixed(1) + " s"; }

  // Per pairing (from a created or restarted session): codes before the scan, the time
  // from the first code to the scan, and from the scan to ready: the last pairing's.
  function summarise(records) {
    var found = {};
    records.forEach(function (record) {
      var at = Date.parse(record.timestamp);
      if (record.type === "SessionCreated" || record.type === "Restarted") found = { codes: 0 };
      else if (record.type === "QrIssued" || record.type === "PairCodeIssued") {
        if (found.scanned == null) { found.codes++; if (found.firstCode == null) found.firstCode = at; }
      } else if (record.type === "Authenticated") found.scanned = at;
      else if (record.type === "Ready" && found.scanned != null && found.ready == null) found.ready = at;
    });
    return {
      codes: found.codes || 0,
      toScan: found.scanned != null && found.firstCode != null ? found.scanned - found.firstCode : null,
      toReady: found.ready != null ? found.ready - found.scanned : null,
    };
  }

  function drawTimeline() {
    var text = t();
    var sum = summarise(history);
    var summary = $("summary");
    summary.textContent = "";
    [["timeToScan", sum.toScan], ["timeToReady", sum.toReady], ["codesBeforeScan", sum.codes]].forEach(function (entry) {
      summary.appendChild(el("dt", {}, text[entry[0]]));
      var value = entry[0] === "codesBeforeScan" ? String(entry[1]) : entry[1] == null ? "—" : seconds(entry[1]);
      summary.appendChild(el("dd", { id: "sum-" + entry[0], "data-value": entry[1] == null ? "" : String(entry[1]) }, value));
    });
    var list = $("timeline");
    list.textContent = "";
    var before = null;
    history.forEach(function (record) {
      var item = el("li", { "data-type": record.type, "data-version": String(record.version) });
      var head = el("p", { class: "step" });
      head.appendChild(el("time", { datetime: record.timestamp }, new Date(record.timestamp).toLocaleString(lang)));
      head.appendChild(document.createTextNode(" · "));
      head.appendChild(el("strong", {}, record.type));
      item.appendChild(head);
      var facts = [];
      if (before) facts.push(fill(text.left, { from: stateText(before.state) }));
      facts.push(fill(text.now, { state: stateText(record.state) }));
      if (before) {
        var gap = Date.parse(record.timestamp) - Date.parse(before.timestamp);
        facts.push(fill(text.after, { duration: seconds(gap) }));
        item.setAttribute("data-gap-ms", String(gap));
      }
      if (record.reason) facts.push(record.reason);
      if (record.fingerprint) facts.push("QR #" + record.fingerprint);
      item.appendChild(el("p", { class: "facts" }, facts.join(" · ")));
      var at = el("button", { type: "button", class: "plain" }, text.stateAt);
      at.addEventListener("click", function () { showStateAt(record.version); });
      item.appendChild(at);
      list.appendChild(item);
      before = record;
    });
  }

  function showStateAt(version) {
    var path = "/api/sessions/" + encodeURIComponent(opened) + "?at=" + version;
    api("GET", path).then(function (session) {
      $("at-state").textContent = fill(t().atState, {
        version: version, state: stateText(session.state), reason: session.reason ? " (" + session.reason + ")" : "",
      });
    }).catch(showError(t().stateAt));
  }

  $("export").addEventListener("click", function () {
    var key = opened;
    readHistory(key).then(function (records) {
      var blob = new Blob([JSON.stringify({ key: key, events: records }, null, 2)], { type: "application/json" });
      var link = el("a", { href: URL.createObjectURL(blob), download: key + "-history.json" });
      document.body.appendChild(link);
      link.click();
      link.remove();
    }).catch(showError(t().export));
  });
  // Closing (the button, or Escape inside the timeline) returns the focus to the row.
  function closeTimeline() {
    var key = opened;
    opened = null;
    $("timeline-box").hidden = true;
    var row = key && document.querySelector('#rows tr[data-key="' + CSS.escape(key) + '"] button');
    if (row) row.focus();
  }
  $("close-timeline").addEventListener("click", closeTimeline);
  $("timeline-box").addEventListener("keydown", function (event) {
    if (event.key === "Escape") closeTimeline();
  });

  // -- actions, each confirmed, each refusal shown with its code ----------------------

  function showError(action) {
    return function (error) {
      var template = error.code ? t().refused : t().failed;
      $("action-result").textContent = fill(template, { action: action, code: error.code, message: error.message });
    };
  }
  function act(label, confirmText, method, path, body) {
    var key = opened;
    if (!key || !window.confirm(fill(confirmText, { key: key, phone: body && body.phone }))) return null;
    $("action-result").textContent = "";
    return api(method, path(key), body).then(function (session) {
      $("action-result").textContent = fill(t().done, { action: label, key: key, state: stateText(session.state) });
      return session;
    }).catch(showError(label));
  }
  function sessionPath(suffix) {
    return function (key) { return "/api/sessions/" + encodeURIComponent(key) + suffix; };
  }
  $("act-logout").addEventListener("click", function () {
    act(t().logout, t().confirmLogout, "POST", sessionPath("/logout"));
  });
  $("act-delete").addEventListener("click", function () {
    act(t().delete, t().confirmDelete, "DELETE", sessionPath(""));
  });
  $("pair-form").addEventListener("submit", function (event) {
    event.preventDefault();
    if (!$("pair-form").reportValidity()) return;
    var label = t().pairCode;
    var asked = act(label, t().confirmPair, "POST", sessionPath("/pair-code"), { phone: $("phone").value.trim() });
    if (asked) asked.then(function (session) { if (session) showPairCode(session.key, 10); });
  });
  function showPairCode(key, tries) {
    api("GET", "/api/sessions/" + encodeURIComponent(key) + "/pair-code").then(function (answer) {
      $("action-result").textContent = fill(t().pairCodeIs, { key: key, code: answer.code });
    }).catch(function (error) {
      if (error.code === "no_code" && tries > 1) setTimeout(function () { showPairCode(key, tries - 1); }, 500);
      else showError(t().pairCode)(error);
    });
  }
  // Link: the Scan-QR page, in this tab (it reads the same sessionStorage token).
  $("link-form").addEventListener("submit", function (event) {
    event.preventDefault();
    if (!$("link-form").reportValidity()) return;
    var key = $("link-key").value.trim();
    var params = new URLSearchParams({ key: key, name: $("link-name").value.trim() || key, engine: $("link-engine").value });
    location.assign("/scan?" + params.toString());
  });

  // -- live updates -------------------------------------------------------------------

  function watch() {
    if (socket) socket.disconnect();
    socket = io({ auth: token ? { token: token } : {}, transports: ["websocket", "polling"] });
    window.__consoleSocket = socket;
    socket.on("connect", function () {
      socket.emit("console.watch", {}, function (ack) {
        if (ack && ack.ok) {
          $("notice").textContent = t().live;
          document.body.setAttribute("data-live", "true");
          load(null).then(loadStats).catch(showError(t().devicesHeading)); // what changed meanwhile
        }
      });
    });
    socket.on("disconnect", function () {
      document.body.setAttribute("data-live", "false");
      $("notice").textContent = t().offline;
    });
    socket.on("session.changed", changed);
  }

  // -- language, selects, start-up ------------------------------------------------------

  function options(select, values, label) {
    var chosen = select.value;
    select.textContent = "";
    if (label) select.appendChild(el("option", { value: "" }, label));
    values.forEach(function (value) { select.appendChild(el("option", { value: value }, stateText(value))); });
    select.value = chosen;
  }
  function render() {
    var text = t();
    document.documentElement.lang = lang;
    document.querySelectorAll("[data-i18n]").forEach(function (node) { node.textContent = text[node.getAttribute("data-i18n")]; });
    document.querySelectorAll("[data-lang]").forEach(function (button) {
      button.setAttribute("aria-pressed", String(button.getAttribute("data-lang") === lang));
    });
    options($("state-filter"), PAGE.states, text.any);
    options($("engine-filter"), PAGE.engines, text.any);
    options($("link-engine"), PAGE.engines, null);
    if (!$("link-engine").value) $("link-engine").value = PAGE.engines[0];
    rows.forEach(function (row) {
      var old = document.querySelector('#rows tr[data-key="' + CSS.escape(row.key) + '"]');
      if (old) old.replaceWith(rowElement(row));
    });
    if (opened) { $("timeline-heading").textContent = fill(text.timelineOf, { key: opened }); drawTimeline(); }
  }
  document.querySelectorAll("[data-lang]").forEach(function (button) {
    button.addEventListener("click", function () {
      lang = button.getAttribute("data-lang");
      try { localStorage.setItem("pairgate.lang", lang); } catch (e) { /* ignore */ }
      render();
      loadStats().catch(function () { /* shown by the next refresh */ });
    });
  });
  $("link-key").setAttribute("pattern", PAGE.keyPattern);

  // The first page at once; live updates alongside. Once the watch is acknowledged the
  // list is read again: a change between the two reads is not lost.
  function start() {
    $("notice").textContent = t().loading;
    load(null).then(function () { watch(); loadStats(); }).catch(function (error) {
      if (error.code !== "unauthorized") showError(t().devicesHeading)(error);
    });
  }
  render();
  start();
})();
