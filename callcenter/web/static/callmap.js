// The pop's map: the caller's newest position with its accuracy circle (AML or the SMS link, pushed
// live) and the intake's latitude/longitude as a marker, following the form as it is typed, copied
// or restored from a draft.

import { fit, makeMap, point, tag } from "./maps.js";

const $ = (id) => document.getElementById(id);

/** Wire the pop's map once; returns `setFix(fix | null)` for the caller's newest position. */
export function callMap() {
  const el = $("pop-map");
  let map = null;
  let circle = null;
  let centre = null;
  let intake = null;
  let fix = null;
  let intakeAt = null;
  let fitted = "";

  const ready = makeMap(el).then((m) => {
    map = m;
    draw();
  });

  function draw() {
    if (!map) return;
    const L = window.L;
    const at = fix ? point(fix.latitude, fix.longitude) : null;
    if (!at) {
      circle?.remove();
      centre?.remove();
      circle = centre = null;
      delete el.dataset.fixLat;
      delete el.dataset.fixLng;
    } else {
      const radius = Math.max(1, Number(fix.accuracy_m) || 1);
      if (!circle) {
        circle = L.circle(at, { radius, color: "#c0392b", weight: 2, fillOpacity: 0.15 }).addTo(map);
        centre = L.circleMarker(at, { radius: 4, color: "#c0392b", fillOpacity: 1 }).addTo(map);
      } else {
        circle.setLatLng(at).setRadius(radius);
        centre.setLatLng(at);
      }
      tag(circle, "map-fix-circle", at[0], at[1], { radius, fixId: fix.id });
      tag(centre, "map-fix", at[0], at[1], { fixId: fix.id });
      el.dataset.fixLat = String(at[0]);
      el.dataset.fixLng = String(at[1]);
    }
    if (!intakeAt) {
      intake?.remove();
      intake = null;
      delete el.dataset.intakeLat;
      delete el.dataset.intakeLng;
    } else {
      if (!intake) intake = L.marker(intakeAt, { title: "intake", keyboard: false }).addTo(map);
      else intake.setLatLng(intakeAt);
      tag(intake, "map-intake", intakeAt[0], intakeAt[1]);
      el.dataset.intakeLat = String(intakeAt[0]);
      el.dataset.intakeLng = String(intakeAt[1]);
    }
    const points = [at, intakeAt].filter(Boolean);
    // Re-frame only when what is shown changed, not at every tick: the call-taker may be panning.
    const key = JSON.stringify(points);
    if (key !== fitted) {
      fitted = key;
      fit(map, points);
    }
  }

  function readIntake() {
    const next = point($("f-latitude").value.trim(), $("f-longitude").value.trim());
    if (JSON.stringify(next) === JSON.stringify(intakeAt)) return;
    intakeAt = next;
    draw();
  }

  // Typed, copied from the caller's position, restored from a draft or cleared with the form: the
  // fields are read on every input and once a second (a restore sets them without an event).
  for (const id of ["f-latitude", "f-longitude"]) $(id).addEventListener("input", readIntake);
  setInterval(readIntake, 1000);
  ready.then(readIntake);

  return (next) => {
    fix = next || null;
    draw();
  };
}
