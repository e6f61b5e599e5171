// Quality review of call handling (docs/supervision.md, "Quality review"), for both pages:
// - the supervision page: the week's sample (its own tab), the review form in a call's detail panel
//   right under the recording player, calibration differences, and scores per call-taker in statistics;
// - the call-taker console: the reviews of their own calls, each acknowledged once read.
//
// The server owns the rules and the arithmetic (sample, weights, score, calibration); the page only shows
// a preview of the score while the form is filled, computed with the weights the server sent.
// Built with DOM APIs only (no innerHTML), like the rest of the pages.

import { fmtDate, t, currentLang } from "./i18n.js";
import { api } from "./api.js";
import { h, showError } from "./abandoned.js";
import * as drafts from "./drafts.js";

let formCache = null;

/** Sections, levels and severities from the server (asked once per page). */
export async function qualityForm() {
  formCache ??= api("GET", "/api/quality/form").catch((err) => { formCache = null; throw err; });
  return formCache;
}

const sectionLabel = (s) => (currentLang() === "en" ? s.label_en : s.label_id);
const fmtScore = (n) => (n == null ? "–" : new Intl.NumberFormat(currentLang() === "en" ? "en-GB" : "id-ID", { maximumFractionDigits: 1 }).format(n));
const signed = (n) => (n == null ? "–" : `${n > 0 ? "+" : ""}${fmtScore(n)}`);

/** The same weighting as the server: applicable sections only, levels out of `max`. */
export function previewScore(form, levels) {
  let total = 0;
  let points = 0;
  for (const s of form.sections) {
    const v = levels[s.code];
    if (v == null) continue;
    total += s.weight;
    points += (s.weight * v) / form.max_level;
  }
  return total ? Math.round((1000 * points) / total) / 10 : null;
}

export function statusBadge(status) {
  return h("span", { class: `q-badge q-${status}`, dataset: { testid: "q-status" } }, t(`q.status.${status}`));
}

function reviewTable(form, review, { testid }) {
  return h("table", { class: "mini q-review", dataset: { testid } },
    h("caption", {},
      `${review.reviewer || "–"} · ${fmtDate(review.submitted_at)} · `,
      h("b", { dataset: { testid: "q-review-score" } }, `${fmtScore(review.score)} / 100`),
      review.critical ? h("span", { class: "q-critical", dataset: { testid: "q-review-critical" } }, ` ${t("q.critical")}`) : null),
    form.sections.map((s) => {
      const lvl = review.levels?.[s.code];
      const dev = review.deviations?.[s.code];
      return h("tr", {},
        h("td", {}, sectionLabel(s)),
        h("td", { class: "num" }, lvl == null ? t("q.na") : `${lvl}/${form.max_level}`),
        h("td", {}, dev ? h("span", { class: `q-dev q-dev-${dev}` }, t(`q.sev.${dev}`)) : ""));
    }),
    review.comment ? h("tr", {}, h("td", { colspan: 3, class: "q-comment" }, review.comment)) : null);
}

/**
 * The quality part of a call's detail panel: nothing for an unanswered call; for a call outside the sample a
 * button that adds it; otherwise the reviews, the calibration differences and (until this supervisor has
 * reviewed the call) the form. What `username` types in the form is kept as a draft, like the intake's.
 */
export function qualitySection(call, { username }) {
  const root = h("section", { class: "dsec q-section", dataset: { testid: "q-section" } }, h("h3", {}, t("q.title")));
  if (!call.answered_at) {
    root.append(h("p", { class: "muted" }, t("q.notAnswered")));
    return root;
  }
  const body = h("div", {});
  const err = h("p", { class: "error", role: "alert", hidden: true, dataset: { testid: "q-error" } });
  root.append(body, err);
  const callId = String(call.id ?? call.call_id);
  const id = encodeURIComponent(callId);
  const draftKey = drafts.reviewDraftKey(callId);
  const saver = new drafts.DraftSaver();

  async function load() {
    try {
      const [form, data] = await Promise.all([qualityForm(), api("GET", `/api/quality/calls/${id}`)]);
      showError(err, null);
      render(form, data);
    } catch (e) {
      showError(err, e);
    }
  }

  function render(form, data) {
    const sample = data.sample;
    if (!sample) {
      body.replaceChildren(
        h("p", { class: "muted" }, t("q.notSampled")),
        h("button", { type: "button", class: "btn btn-small", dataset: { testid: "q-add" }, onclick: async (ev) => {
          ev.target.disabled = true;
          try {
            await api("POST", `/api/quality/calls/${id}`);
            await load();
          } catch (e) {
            ev.target.disabled = false;
            showError(err, e);
          }
        } }, t("q.add")));
      return;
    }
    const parts = [
      h("p", { dataset: { testid: "q-sample" } }, statusBadge(sample.status), " ",
        t(`q.reason.${sample.reason}`), " · ", t("q.due", { d: fmtDate(sample.due_at) }),
        sample.late ? h("span", { class: "q-late" }, ` (${t("q.late")})`) : null),
    ];
    // Blind calibration: until this supervisor has submitted their own review, the server sends no scores.
    if (sample.blind) parts.push(h("p", { class: "muted", dataset: { testid: "q-blind" } }, t("q.blind", { n: sample.review_count })));
    (sample.reviews || []).forEach((r, i) =>
      parts.push(reviewTable(form, r, { testid: i === 0 ? "q-review-primary" : "q-review-calibration" })));
    for (const c of sample.calibration || []) {
      const diffs = form.sections
        .filter((s) => c.level_differences[s.code] != null && c.level_differences[s.code] !== 0)
        .map((s) => `${sectionLabel(s)} ${signed(c.level_differences[s.code])}`);
      parts.push(h("p", { class: "q-calibration", dataset: { testid: "q-calibration" } },
        h("b", {}, t("q.calibration", { r: c.reviewer || "–" })), " ",
        h("span", { dataset: { testid: "q-calibration-diff" } }, signed(c.score_difference)),
        diffs.length ? h("span", { class: "muted" }, ` · ${diffs.join(", ")}`) : null,
        c.critical_agrees ? null : h("span", { class: "q-critical" }, ` · ${t("q.criticalDisagrees")}`)));
    }
    if (!data.reviewed_by_me) parts.push(reviewForm(form, sample.review_count > 0));
    body.replaceChildren(...parts);
  }

  function reviewForm(form, calibrating) {
    const preview = h("b", { dataset: { testid: "q-score-preview" } }, "–");
    const rows = form.sections.map((s) => {
      const level = h("select", { name: `level-${s.code}`, dataset: { testid: `q-level-${s.code}` }, "aria-label": sectionLabel(s) },
        h("option", { value: "" }, "—"),
        h("option", { value: "na" }, t("q.na")),
        ...Array.from({ length: form.max_level + 1 }, (_, i) => h("option", { value: String(i) }, `${i}`)));
      const dev = h("select", { name: `dev-${s.code}`, dataset: { testid: `q-dev-${s.code}` }, "aria-label": t("q.deviation") },
        h("option", { value: "" }, t("q.sev.none")),
        ...form.severities.map((v) => h("option", { value: v }, t(`q.sev.${v}`))));
      return h("tr", {}, h("td", {}, sectionLabel(s), h("span", { class: "muted small" }, ` (${s.weight})`)), h("td", {}, level), h("td", {}, dev));
    });
    const comment = h("textarea", { name: "comment", rows: 3, maxlength: 4000, dataset: { testid: "q-comment" }, "aria-label": t("q.comment") });
    const submit = h("button", { type: "submit", class: "btn btn-primary btn-small", dataset: { testid: "q-submit" } }, t("q.submit"));
    const draftStatus = h("span", { class: "muted small", role: "status", dataset: { testid: "q-draft-status" } });
    const el = h("form", { class: "q-form", dataset: { testid: "q-form" }, novalidate: true },
      h("p", { class: "muted small" }, calibrating ? t("q.calibrateHint") : t("q.formHint", { n: form.max_level })),
      h("table", { class: "mini" }, h("thead", {}, h("tr", {}, h("th", {}, t("q.section")), h("th", {}, t("q.level")), h("th", {}, t("q.deviation")))), h("tbody", {}, rows)),
      h("label", { class: "q-comment-label" }, t("q.comment"), comment),
      h("p", {}, t("q.preview"), " ", preview), submit, " ", draftStatus);
    // The form as typed (select values as they are, "na" included), which is what a draft keeps.
    const typed = () => {
      const data = { levels: {}, deviations: {}, comment: comment.value };
      for (const s of form.sections) {
        data.levels[s.code] = el.elements[`level-${s.code}`].value;
        data.deviations[s.code] = el.elements[`dev-${s.code}`].value;
      }
      return data;
    };
    const known = (select, value) => typeof value === "string" && [...select.options].some((o) => o.value === value);
    const restore = (data) => {
      for (const s of form.sections) {
        const level = el.elements[`level-${s.code}`];
        const dev = el.elements[`dev-${s.code}`];
        if (known(level, data.levels?.[s.code])) level.value = data.levels[s.code];
        if (known(dev, data.deviations?.[s.code])) dev.value = data.deviations[s.code];
      }
      if (typeof data.comment === "string") comment.value = data.comment;
      showPreview();
    };
    let dirty = false;
    const saveDraft = () => {
      dirty = true;
      drafts.saveLocalDraft(username, draftKey, { data: typed(), updated_at: new Date().toISOString() });
      draftStatus.textContent = t("draft.local");
      saver.schedule(async () => {
        const res = await saver.put(draftKey, typed());
        draftStatus.textContent = res ? t("draft.server", { t: fmtDate(res.updated_at || new Date(), false) }) : t("draft.serverFailed");
      });
    };
    (async () => {
      const local = drafts.readLocalDraft(username, draftKey);
      const newest = drafts.newestDraft(local, await drafts.readServerDraft(draftKey));
      if (!newest || dirty) return; // typed meanwhile: what is on screen is newer
      restore(newest.data);
      drafts.saveLocalDraft(username, draftKey, newest); // both copies now agree
      draftStatus.textContent = t("draft.restored");
    })();
    el.addEventListener("input", saveDraft);
    const read = () => {
      const levels = {};
      const deviations = {};
      for (const s of form.sections) {
        const v = el.elements[`level-${s.code}`].value;
        levels[s.code] = v === "" ? undefined : v === "na" ? null : Number(v);
        const d = el.elements[`dev-${s.code}`].value;
        if (d) deviations[s.code] = d;
      }
      return { levels, deviations, comment: comment.value };
    };
    function showPreview() {
      const { levels } = read();
      preview.textContent = fmtScore(previewScore(form, Object.fromEntries(Object.entries(levels).filter(([, v]) => v !== undefined))));
    }
    el.addEventListener("change", showPreview);
    el.addEventListener("submit", async (ev) => {
      ev.preventDefault();
      const review = read();
      const missing = form.sections.filter((s) => review.levels[s.code] === undefined);
      for (const s of form.sections) el.elements[`level-${s.code}`].toggleAttribute("aria-invalid", missing.includes(s));
      if (missing.length) return showError(err, { status: 422, body: { message: t("q.fillAll") } });
      submit.disabled = true;
      // A draft PUT landing after the POST would bring back the draft the server just deleted.
      await saver.settled();
      try {
        await api("POST", `/api/quality/calls/${id}/reviews`, review);
        drafts.removeLocalDraft(username, draftKey);
        await load();
      } catch (e) {
        submit.disabled = false;
        showError(err, e);
      }
    });
    return el;
  }

  load();
  return root;
}

/** The sample tab: a week's sampled calls with their status; `open(callId)` shows a call's detail. */
export function sampleList({ form, body, error, onOpen }) {
  let data = null;

  async function load() {
    const week = form.elements.week.value;
    try {
      data = await api("GET", `/api/quality/samples${week ? `?week=${encodeURIComponent(week)}` : ""}`);
      if (!week) form.elements.week.value = data.week;
      showError(error, null);
      render();
    } catch (e) {
      showError(error, e);
    }
  }

  async function draw() {
    try {
      const res = await api("POST", "/api/quality/samples", { week: form.elements.week.value || undefined });
      form.querySelector("[data-testid=q-draw-result]").textContent = t("q.drawn", { n: res.added });
      await load();
    } catch (e) {
      showError(error, e);
    }
  }

  function render() {
    if (!data) return;
    const rows = data.samples.map((s) =>
      h("tr", { class: "clickable", tabindex: "0", dataset: { testid: "q-sample-row", callId: s.call_id, status: s.status },
        onclick: () => onOpen(s.call_id),
        onkeydown: (ev) => { if (ev.key === "Enter") onOpen(s.call_id); } },
      h("td", {}, fmtDate(s.arrived_at)),
      h("td", {}, s.calltaker_name || s.calltaker || "–"),
      h("td", {}, t(`q.reason.${s.reason}`)),
      h("td", {}, fmtDate(s.due_at)),
      h("td", {}, statusBadge(s.status)),
      s.blind
        ? h("td", { class: "num muted", title: t("q.blind", { n: s.review_count }), dataset: { testid: "q-score-hidden" } }, t("q.hidden"))
        : h("td", { class: "num" }, fmtScore(s.score), s.critical ? h("span", { class: "q-critical" }, " !") : null),
      h("td", { class: "num" }, (s.calibration || []).map((c) => signed(c.score_difference)).join(" ") || "–")));
    body.replaceChildren(...rows);
    if (!rows.length) body.append(h("tr", {}, h("td", { colspan: 7, class: "muted" }, t("q.emptySample"))));
  }

  form.addEventListener("submit", (ev) => { ev.preventDefault(); load(); });
  form.querySelector("[data-testid=q-draw]").addEventListener("click", draw);
  return { load, render };
}

/** Statistics card: average score per call-taker and week, with its CSV. */
export async function scoresCard(query) {
  const data = await api("GET", `/api/quality/scores?${query}`);
  const rows = data.scores.map((r) => h("tr", { dataset: { testid: "q-score-row" } },
    h("td", {}, r.calltaker), h("td", {}, r.week), h("td", { class: "num" }, String(r.reviews)),
    h("td", { class: "num" }, fmtScore(r.average)), h("td", { class: "num" }, String(r.critical))));
  return h("section", { class: "panel stats-card", dataset: { testid: "stats-quality" } },
    h("div", { class: "card-head" }, h("h2", {}, t("st.quality")),
      h("a", { class: "csv", href: `/api/quality/scores.csv?${query}`, download: "quality_scores.csv", dataset: { testid: "stats-csv-quality" } }, "CSV")),
    h("table", { class: "stats-table", dataset: { testid: "stats-quality-table" } },
      h("thead", {}, h("tr", {}, [t("st.col.calltaker"), t("q.week"), t("q.reviews"), t("q.average"), t("q.critical")].map((x, i) => h("th", { class: i > 1 ? "num" : null }, x)))),
      h("tbody", {}, rows.length ? rows : h("tr", {}, h("td", { colspan: 5, class: "muted" }, t("wb.none"))))));
}

/** The console's panel: the reviews of my calls, unread first, each with its acknowledge button. */
export function myReviews({ body, count, error }) {
  let data = null;
  let form = null;

  async function load() {
    try {
      [form, data] = await Promise.all([qualityForm(), api("GET", "/api/quality/mine")]);
      showError(error, null);
      render();
    } catch (e) {
      if (e.status !== 401) showError(error, e);
    }
  }

  function render() {
    if (!data || !form) return;
    count.hidden = !data.unread;
    count.textContent = String(data.unread);
    body.replaceChildren(...data.reviews.map((s) => {
      const r = s.review;
      const ack = r.acknowledged_at
        ? h("p", { class: "muted small", dataset: { testid: `q-acked-${r.id}` } }, t("q.acked", { d: fmtDate(r.acknowledged_at) }))
        : h("button", { type: "button", class: "btn btn-primary btn-small", dataset: { testid: `q-ack-${r.id}` }, onclick: async (ev) => {
          ev.target.disabled = true;
          try {
            await api("POST", `/api/quality/reviews/${r.id}/acknowledge`);
            await load();
          } catch (e) {
            ev.target.disabled = false;
            showError(error, e);
          }
        } }, t("q.ack"));
      // preload="none": only a deliberate play fetches the recording (each fetch is in the access log).
      const audio = h("audio", { controls: true, preload: "none", src: `/api/quality/reviews/${r.id}/recording`, dataset: { testid: "q-mine-audio" } });
      return h("article", { class: "q-mine", dataset: { testid: "q-mine", reviewId: r.id } },
        h("p", {}, h("b", {}, fmtDate(s.arrived_at)), " · ", s.caller_number || "", " · ", t(`q.reason.${s.reason}`)),
        audio, reviewTable(form, r, { testid: "q-mine-review" }), ack);
    }));
    if (!data.reviews.length) body.append(h("p", { class: "muted" }, t("q.noneMine")));
  }

  return { load, render };
}
