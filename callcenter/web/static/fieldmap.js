// OKI's map dashboard (agency view and supervisor): open incidents with coordinates and their field
// officers' last positions and statuses, from GET /api/map (an officer sees their agency's only).

import { api } from "./api.js";
import { fit, lang, makeMap, point, tag } from "./maps.js";

const WORDS = {
  id: { count: "{n} laporan terbuka di peta", none: "Tidak ada laporan terbuka dengan koordinat", failed: "Peta gagal dimuat: {e}", officer: "petugas" },
  en: { count: "{n} open incidents on the map", none: "No open incident with coordinates", failed: "Map failed to load: {e}", officer: "officer" },
};
/** Unit colours by the dispatch's progress. */
const COLOURS = { accepted: "#2471a3", dispatched: "#2471a3", en_route: "#d68910", on_scene: "#1e8449", resolved: "#7f8c8d", cancelled: "#7f8c8d" };

function text(tag, value) {
  const node = document.createElement(tag);
  node.textContent = value;
  return node;
}

/** The dashboard in `el`, its summary line in `status`; `load()` (re)reads it. */
export function fieldMap(el, status) {
  let map = null;
  let layer = null;
  let first = true;
  const ready = makeMap(el).then((m) => {
    map = m;
    if (map) layer = window.L.layerGroup().addTo(map);
  });

  async function load() {
    await ready;
    const words = WORDS[lang()];
    let body;
    try {
      body = await api("GET", "/api/map");
    } catch (err) {
      status.textContent = words.failed.replace("{e}", err.body?.error || err.message);
      status.dataset.state = "failed";
      return;
    }
    const incidents = body.incidents || [];
    status.textContent = incidents.length ? words.count.replace("{n}", incidents.length) : words.none;
    status.dataset.state = "loaded";
    status.dataset.count = String(incidents.length);
    if (!map) return;
    const L = window.L;
    layer.clearLayers();
    const points = [];
    for (const inc of incidents) {
      const at = point(inc.latitude, inc.longitude);
      if (!at) continue;
      points.push(at);
      const popup = document.createElement("div");
      popup.append(text("strong", inc.reference), text("div", `${inc.category} · ${inc.priority}`), text("div", inc.address || ""));
      for (const d of inc.dispatches || []) popup.append(text("div", `${d.agency_name}: ${d.status}`));
      const marker = L.marker(at, { title: inc.reference }).bindPopup(popup).addTo(layer);
      tag(marker, "map-incident", at[0], at[1], { id: inc.id, reference: inc.reference });
      for (const u of inc.units || []) {
        const pos = point(u.latitude, u.longitude);
        if (!pos) continue;
        points.push(pos);
        const colour = COLOURS[u.dispatch_status] || "#555";
        const label = `${u.agency_name} · ${u.officer || words.officer} · ${u.status} · ${new Date(u.at).toLocaleTimeString()}`;
        const unit = L.circleMarker(pos, { radius: 7, color: colour, fillColor: colour, fillOpacity: 0.8 })
          .bindTooltip(label)
          .addTo(layer);
        tag(unit, "map-unit", pos[0], pos[1], { incident: inc.id, status: u.status, officer: u.officer, agency: u.agency });
      }
    }
    // Frame everything once; later reloads keep the user's view (a wall screen may be zoomed in).
    if (first && points.length) {
      first = false;
      fit(map, points, 15);
    } else map.invalidateSize();
  }

  return { load };
}
