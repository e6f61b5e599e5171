// The page behind the SMS location link (/l/{token}): asks the browser for its position and sends
// it to the 112 centre, again whenever it improves or moves, until the citizen presses "Berhenti" or
// the link expires. coords.accuracy is a radius in metres at 95 % confidence (W3C Geolocation).
"use strict";

(() => {
  const send = document.getElementById("send");
  const stop = document.getElementById("stop");
  const status = document.getElementById("status");
  const MIN_GAP_MS = 3000;
  let watch = null;
  let lastSent = 0;
  let best = Infinity;
  let sent = 0;

  function say(text, state) {
    status.textContent = text;
    status.dataset.state = state;
  }

  function end(text, state) {
    if (watch !== null) navigator.geolocation.clearWatch(watch);
    watch = null;
    stop.hidden = true;
    send.hidden = false;
    say(text, state);
  }

  async function post(coords) {
    const body = { latitude: coords.latitude, longitude: coords.longitude, accuracy: coords.accuracy };
    const res = await fetch(location.pathname, {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify(body),
      credentials: "omit",
    });
    if (res.status === 410 || res.status === 404) {
      end("Tautan ini sudah tidak berlaku. Terima kasih.", "expired");
      return;
    }
    if (!res.ok) throw new Error(String(res.status));
    sent += 1;
    say(`Terima kasih. Lokasi Anda terkirim ke 112 (akurasi ± ${Math.round(coords.accuracy)} m). ` +
        "Biarkan halaman ini terbuka agar petugas dapat mengikuti posisi Anda.", "sent");
  }

  function onPosition(pos) {
    const now = Date.now();
    const better = pos.coords.accuracy < best * 0.8;
    if (!better && now - lastSent < MIN_GAP_MS) return;
    lastSent = now;
    best = Math.min(best, pos.coords.accuracy);
    post(pos.coords).catch(() => say("Gagal mengirim, mencoba lagi…", "retry"));
  }

  function onError(err) {
    if (err.code === err.PERMISSION_DENIED) {
      end("Izin lokasi ditolak. Izinkan akses lokasi untuk situs ini, lalu tekan tombol lagi.", "denied");
    } else if (sent === 0) {
      say("Lokasi belum didapat. Pastikan GPS aktif; kami terus mencoba…", "waiting");
    }
  }

  function start() {
    if (!("geolocation" in navigator)) {
      say("Browser ini tidak dapat memberi lokasi. Sebutkan lokasi Anda kepada petugas.", "unsupported");
      return;
    }
    say("Mencari lokasi Anda…", "locating");
    send.hidden = true;
    stop.hidden = false;
    watch = navigator.geolocation.watchPosition(onPosition, onError, {
      enableHighAccuracy: true,
      maximumAge: 0,
      timeout: 30000,
    });
  }

  send.addEventListener("click", start);
  stop.addEventListener("click", () => end("Pengiriman lokasi dihentikan. Terima kasih.", "stopped"));
  start(); // the citizen opened the link to send the position: ask at once (the browser still asks permission)
})();
