// The citizen report app (/lapor/): verify the phone number once by SMS code, then report an
// emergency by holding a category button for 3 s (a shorter press sends nothing: no pocket taps),
// with the browser's position when it has one and an optional photo. The server decides everything
// (categories, limits, the block); this page only shows its answers, in Indonesian ("pesan").
"use strict";

(() => {
  const $ = (id) => document.getElementById(id);
  const app = $("app");
  const message = $("message");
  const SCREENS = ["loading", "number", "code", "report", "sending", "done", "blocked"];
  const NUMBER_KEY = "lapor.number";
  let settings = { hold_ms: 3000, photo_max_bytes: 5000000, code_digits: 6, categories: [] };
  let fix = null; // the best recent position: {latitude, longitude, accuracy}
  let watch = null;
  let sending = false;

  function show(name) {
    for (const screen of SCREENS) $("screen-" + screen).hidden = screen !== name;
    app.dataset.screen = name;
  }

  function say(text, kind) {
    message.textContent = text || "";
    message.dataset.kind = kind || "info";
    message.setAttribute("role", kind === "error" ? "alert" : "status");
  }

  async function api(method, path, body) {
    const init = { method, credentials: "same-origin", headers: {} };
    if (body instanceof FormData) init.body = body;
    else if (body !== undefined) {
      init.headers["Content-Type"] = "application/json";
      init.body = JSON.stringify(body);
    }
    const res = await fetch("/lapor/api/" + path, init);
    let data = {};
    try {
      data = await res.json();
    } catch (_) {
      data = {};
    }
    return { status: res.status, ok: res.ok, data };
  }

  function offline() {
    say("Tidak dapat terhubung ke 112. Periksa koneksi internet. Dalam keadaan darurat, telepon 112.", "error");
  }

  function blocked(text) {
    if (text) $("blocked-text").textContent = text;
    stopLocating();
    show("blocked");
  }

  // -- verification ------------------------------------------------------------------------------------

  async function load() {
    let res;
    try {
      res = await api("GET", "state");
    } catch (_) {
      // Offline (the service worker opened the shell): say so, and that 112 works by phone.
      $("screen-loading").querySelector("p").textContent = "";
      show("loading");
      offline();
      return;
    }
    if (!res.ok) {
      show("number");
      say(res.data.pesan || "Aplikasi belum dapat digunakan. Dalam keadaan darurat, telepon 112.", "error");
      return;
    }
    settings = res.data;
    $("code-digits").textContent = String(settings.code_digits);
    if (res.data.blocked) return blocked(res.data.pesan);
    if (!res.data.verified) {
      $("number").value = sessionStorage.getItem(NUMBER_KEY) || "";
      show("number");
      return;
    }
    $("verified-number").textContent = res.data.number || "";
    showReport();
  }

  $("number-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    const number = $("number").value.trim();
    if (!number) return say("Masukkan nomor ponsel Anda.", "error");
    sessionStorage.setItem(NUMBER_KEY, number);
    $("send-code").disabled = true;
    say("Mengirim kode…");
    try {
      const res = await api("POST", "code", { number });
      if (res.status === 403 && res.data.blocked) return blocked(res.data.pesan);
      if (!res.ok) return say(res.data.pesan || "Kode tidak dapat dikirim.", "error");
      $("code-number").textContent = number;
      $("code").value = "";
      show("code");
      say("Kode terkirim. Periksa SMS Anda.");
      $("code").focus();
    } catch (_) {
      offline();
    } finally {
      $("send-code").disabled = false;
    }
  });

  $("code-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    const code = $("code").value.trim();
    if (!/^[0-9]+$/.test(code) || code.length !== settings.code_digits) {
      return say(`Kode terdiri dari ${settings.code_digits} angka.`, "error");
    }
    $("verify").disabled = true;
    try {
      const res = await api("POST", "verify", { number: sessionStorage.getItem(NUMBER_KEY) || "", code });
      if (res.status === 403) return blocked(res.data.pesan);
      if (!res.ok) return say(res.data.pesan || "Verifikasi gagal.", "error");
      sessionStorage.removeItem(NUMBER_KEY);
      say("Nomor terverifikasi.");
      await load();
    } catch (_) {
      offline();
    } finally {
      $("verify").disabled = false;
    }
  });

  $("other-number").addEventListener("click", () => {
    say("");
    show("number");
  });

  $("forget").addEventListener("click", async () => {
    try {
      await api("POST", "forget");
    } catch (_) {
      /* the cookie stays; the next load says so */
    }
    stopLocating();
    say("");
    show("number");
  });

  // -- location ----------------------------------------------------------------------------------------

  function locationText(state, text) {
    const el = $("location");
    el.dataset.state = state;
    el.textContent = text;
  }

  function startLocating() {
    if (watch !== null) return;
    if (!("geolocation" in navigator)) {
      locationText("none", "Lokasi tidak tersedia di browser ini — laporan tetap dapat dikirim.");
      return;
    }
    locationText("waiting", "Mencari lokasi Anda…");
    watch = navigator.geolocation.watchPosition(
      (pos) => {
        const c = pos.coords;
        // A better radius, or a newer fix when the old one is a minute old.
        if (!fix || c.accuracy <= fix.accuracy || Date.now() - fix.at > 60000) {
          fix = { latitude: c.latitude, longitude: c.longitude, accuracy: c.accuracy, at: Date.now() };
        }
        const el = $("location");
        el.dataset.accuracy = String(Math.round(fix.accuracy));
        locationText("fixed", `Lokasi ditemukan (akurasi ± ${Math.round(fix.accuracy)} m).`);
      },
      (err) => {
        if (fix) return;
        const denied = err.code === err.PERMISSION_DENIED;
        locationText(
          denied ? "denied" : "none",
          denied
            ? "Izin lokasi ditolak — laporan tetap dapat dikirim; sebutkan lokasi Anda saat ditelepon."
            : "Lokasi belum didapat — laporan tetap dapat dikirim.",
        );
      },
      { enableHighAccuracy: true, maximumAge: 30000, timeout: 30000 },
    );
  }

  function stopLocating() {
    if (watch !== null) navigator.geolocation.clearWatch(watch);
    watch = null;
  }

  // -- photo -------------------------------------------------------------------------------------------

  $("photo").addEventListener("change", () => {
    const file = $("photo").files[0];
    const status = $("photo-status");
    if (!file) {
      status.textContent = "";
      return;
    }
    if (!["image/jpeg", "image/png"].includes(file.type)) {
      $("photo").value = "";
      status.textContent = "Foto harus berformat JPEG atau PNG.";
      return;
    }
    if (file.size > settings.photo_max_bytes) {
      $("photo").value = "";
      status.textContent = `Foto terlalu besar (maksimal ${Math.floor(settings.photo_max_bytes / 1000000)} MB).`;
      return;
    }
    status.textContent = "Foto akan dikirim bersama laporan.";
  });

  // -- hold to send ------------------------------------------------------------------------------------

  function categoryButton(category) {
    const button = document.createElement("button");
    button.type = "button";
    button.className = "cat";
    button.dataset.category = category.code;
    button.setAttribute("data-testid", "lapor-cat-" + category.code);
    button.dataset.holding = "false";
    button.dataset.progress = "0";
    button.setAttribute("aria-label", `${category.label}: tahan 3 detik untuk mengirim`);
    const bar = document.createElement("span");
    bar.className = "progress";
    bar.setAttribute("data-testid", "lapor-progress-" + category.code);
    const label = document.createElement("span");
    label.className = "label";
    label.textContent = category.label;
    button.append(bar, label);
    holdable(button, bar, category);
    return button;
  }

  function holdable(button, bar, category) {
    let started = null;
    let frame = null;
    let timer = null;

    function paint() {
      if (started === null) return;
      const done = Math.min(1, (performance.now() - started) / settings.hold_ms);
      bar.style.width = `${Math.round(done * 100)}%`;
      button.dataset.progress = String(Math.round(done * 100));
      frame = requestAnimationFrame(paint);
    }

    function begin() {
      if (started !== null || sending) return;
      started = performance.now();
      button.dataset.holding = "true";
      say(`Tahan… ${category.label}`);
      frame = requestAnimationFrame(paint);
      timer = setTimeout(complete, settings.hold_ms);
    }

    function reset() {
      started = null;
      if (frame !== null) cancelAnimationFrame(frame);
      if (timer !== null) clearTimeout(timer);
      frame = timer = null;
      button.dataset.holding = "false";
      button.dataset.progress = "0";
      bar.style.width = "0";
    }

    function cancel() {
      if (started === null) return;
      reset();
      say("Dibatalkan. Tahan tombol selama 3 detik untuk mengirim.");
    }

    function complete() {
      reset();
      send(category);
    }

    button.addEventListener("pointerdown", (event) => {
      if (event.button !== 0) return;
      event.preventDefault();
      begin();
    });
    for (const type of ["pointerup", "pointercancel", "pointerleave"]) button.addEventListener(type, cancel);
    button.addEventListener("keydown", (event) => {
      if ((event.key === " " || event.key === "Enter") && !event.repeat) {
        event.preventDefault();
        begin();
      }
    });
    button.addEventListener("keyup", (event) => {
      if (event.key === " " || event.key === "Enter") cancel();
    });
    button.addEventListener("blur", cancel);
    button.addEventListener("contextmenu", (event) => event.preventDefault()); // a long press is ours
    button.addEventListener("click", (event) => event.preventDefault()); // a tap alone sends nothing
  }

  function showReport() {
    const box = $("categories");
    if (!box.childElementCount) for (const category of settings.categories) box.append(categoryButton(category));
    show("report");
    startLocating();
  }

  async function send(category) {
    if (sending) return;
    sending = true;
    const form = new FormData();
    form.append("category", category.code);
    if (fix) {
      form.append("latitude", String(fix.latitude));
      form.append("longitude", String(fix.longitude));
      form.append("accuracy", String(fix.accuracy));
    }
    const photo = $("photo").files[0];
    if (photo) form.append("photo", photo, photo.name);
    show("sending");
    say("Mengirim laporan…");
    try {
      const res = await api("POST", "reports", form);
      if (res.status === 201) {
        const id = String(res.data.report.id);
        $("report-id").textContent = "#" + id;
        $("report-id").dataset.reportId = id;
        $("photo").value = "";
        $("photo-status").textContent = "";
        stopLocating();
        say("");
        show("done");
        return;
      }
      if (res.status === 403 && res.data.blocked) return blocked(res.data.pesan);
      if (res.status === 401) {
        show("number");
        say(res.data.pesan || "Verifikasi nomor Anda lagi.", "error");
        return;
      }
      show("report");
      say(res.data.pesan || "Laporan tidak dapat dikirim. Dalam keadaan darurat, telepon 112.", "error");
    } catch (_) {
      show("report");
      offline();
    } finally {
      sending = false;
    }
  }

  $("again").addEventListener("click", () => {
    fix = null;
    say("");
    showReport();
  });

  if ("serviceWorker" in navigator) {
    navigator.serviceWorker.register("/lapor/sw.js", { scope: "/lapor/" }).catch(() => {
      /* the app works without it; only the offline shell is lost */
    });
  }
  load();
})();
