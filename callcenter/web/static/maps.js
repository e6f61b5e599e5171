// The consoles' maps (docs/location.md, "The map"): Leaflet, vendored under /static/vendor/leaflet/ and
// loaded by the page as a classic script (window.L) before its modules.
//
// Tiles come from `[web] map_tiles` (GET /api/map/settings); none configured, or none reachable, and
// the map is a blank background with its markers: a tile that fails to load is only an empty square.
// Every marker carries its coordinates in data attributes (data-lat, data-lng): what a test, or a
// screen reader's description, can check without reading Leaflet's pixel transforms.

import { api } from "./api.js";
import { currentLang } from "./i18n.js";

/** Indonesia: where a map with nothing on it yet looks. */
const HOME = [-2.5, 118];
const HOME_ZOOM = 4;

let settings = null;

/** The tile settings, asked once per page; a failure (not logged in yet, app restarting) is not kept. */
function tileSettings() {
  if (!settings) {
    settings = api("GET", "/api/map/settings").catch((err) => {
      settings = null;
      throw err;
    });
  }
  return settings;
}

/** Put the configured tile layer under `map`, asking again every few seconds until the app answers. */
async function addTiles(map, el) {
  let s;
  try {
    s = await tileSettings();
  } catch {
    setTimeout(() => addTiles(map, el), 3000);
    return;
  }
  if (s.tiles) {
    const layer = window.L.tileLayer(s.tiles, { maxZoom: 19, attribution: s.attribution });
    layer.on("tileerror", () => (el.dataset.tiles = "unreachable"));
    layer.on("tileload", () => (el.dataset.tiles = "on"));
    layer.addTo(map);
  }
  el.dataset.tiles = s.tiles ? "on" : "off";
}

/** Make a Leaflet map in `el` (null when Leaflet did not load: the page works on without a map). */
export async function makeMap(el) {
  const L = window.L;
  if (!L || !el) return null;
  const map = L.map(el, { center: HOME, zoom: HOME_ZOOM });
  el.dataset.ready = "1";
  // A map made while its panel was hidden has no size: measure again whenever the box changes.
  new ResizeObserver(() => map.invalidateSize()).observe(el);
  addTiles(map, el);
  return map;
}

/** Tag a marker's element with what it shows (after it is on the map: only then has it one). */
export function tag(layer, testid, lat, lng, extra = {}) {
  const node = layer.getElement?.();
  if (!node) return;
  node.dataset.testid = testid;
  node.dataset.lat = String(lat);
  node.dataset.lng = String(lng);
  for (const [k, v] of Object.entries(extra)) node.dataset[k] = v == null ? "" : String(v);
}

/** A latitude/longitude pair when both are numbers in range, else null. */
export function point(lat, lng) {
  const a = typeof lat === "number" ? lat : Number.parseFloat(String(lat ?? "").replace(",", "."));
  const b = typeof lng === "number" ? lng : Number.parseFloat(String(lng ?? "").replace(",", "."));
  if (!Number.isFinite(a) || !Number.isFinite(b) || Math.abs(a) > 90 || Math.abs(b) > 180) return null;
  if (a === 0 && b === 0) return null;
  return [a, b];
}

/** Show every point (or the home view with none); `maxZoom` keeps one point from zooming to a roof. */
export function fit(map, points, maxZoom = 16) {
  if (!map) return;
  map.invalidateSize();
  if (!points.length) return;
  if (points.length === 1) map.setView(points[0], Math.min(maxZoom, Math.max(map.getZoom(), 14)));
  else map.fitBounds(window.L.latLngBounds(points), { padding: [24, 24], maxZoom });
}

export function lang() {
  return currentLang() === "en" ? "en" : "id";
}
