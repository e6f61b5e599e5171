"""The code lists of the intake form, with the labels call-takers see in Indonesian and English.

Codes are what the database, the statistics and the agencies' integrations store; labels are for
people and may be reworded without touching a single stored row. The browser carries its own
translation tables, but it gets these lists from ``GET /api/intake/schema`` so that the server
stays the one place that decides which codes exist.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Code:
    code: str
    label_id: str
    label_en: str

    def as_json(self) -> dict[str, str]:
        return {"code": self.code, "label_id": self.label_id, "label_en": self.label_en}


#: Emergency categories, in the order the form lists them (the most frequent first, "other" last).
CATEGORIES: tuple[Code, ...] = (
    Code("medical", "Ambulans / medis", "Ambulance / medical"),
    Code("fire", "Kebakaran", "Fire"),
    Code("disaster", "Bencana alam", "Natural disaster"),
    Code("traffic_accident", "Kecelakaan lalu lintas", "Traffic accident"),
    Code("crime", "Kriminalitas", "Crime"),
    Code("violence_women_children", "Kekerasan terhadap perempuan dan anak", "Violence against women and children"),
    Code("wild_animal", "Binatang buas", "Wild animal"),
    Code("mental_abandoned", "ODGJ / orang terlantar", "Mentally ill / abandoned person"),
    Code("missing_person", "Orang hilang", "Missing person"),
    Code("public_order", "Ketertiban umum", "Public order"),
    Code("environment", "Lingkungan / sampah", "Environment / waste"),
    Code("infectious_disease", "COVID-19 / penyakit menular", "COVID-19 / infectious disease"),
    Code("other", "Lainnya", "Other"),
)

PRIORITIES: tuple[Code, ...] = (
    Code("critical", "Kritis", "Critical"),
    Code("high", "Tinggi", "High"),
    Code("normal", "Normal", "Normal"),
    Code("low", "Rendah", "Low"),
)
#: What an intake gets when the call-taker did not choose: most calls are neither trivial nor critical.
DEFAULT_PRIORITY = "normal"

#: Suggestions for the victims' condition; the field itself is free text (several victims differ).
VICTIM_CONDITIONS: tuple[Code, ...] = (
    Code("none", "Tidak ada korban", "No victims"),
    Code("minor", "Luka ringan", "Minor injuries"),
    Code("serious", "Luka berat", "Serious injuries"),
    Code("critical", "Kritis", "Critical"),
    Code("deceased", "Meninggal dunia", "Deceased"),
    Code("unknown", "Belum diketahui", "Unknown"),
)

#: Circumstances of an incident the call-taker ticks on the intake (any number of them). The dispatch
#: rules (``[[rules]] when_flag`` in ``config/agencies.toml``) add agencies by these codes, and the
#: directory refuses at start a rule naming a code that is not listed here.
FLAGS: tuple[Code, ...] = (
    Code("needs_water", "Butuh air (PDAM)", "Needs water (PDAM)"),
    Code("hazardous_material", "Bahan berbahaya", "Hazardous material"),
    Code("trapped_people", "Korban terjebak", "People trapped"),
    Code("child_involved", "Melibatkan anak", "Child involved"),
    Code("violence", "Ada kekerasan", "Violence involved"),
    Code("road_blocked", "Akses jalan tertutup", "Road access blocked"),
    Code("narcotics", "Terkait narkoba", "Narcotics involved"),
)

#: What a call turned out to be, set by the call-taker after (or during) the call.
CLASSIFICATIONS: tuple[Code, ...] = (
    Code("genuine", "Darurat (asli)", "Genuine emergency"),
    Code("non_emergency", "Bukan darurat", "Non-emergency"),
    Code("prank", "Iseng / prank", "Prank"),
    Code("hoax", "Hoaks / laporan palsu", "Hoax"),
    Code("silent", "Panggilan diam", "Silent call"),
    Code("misdial", "Salah sambung", "Misdial"),
    Code("abandoned", "Terputus sebelum dilayani", "Abandoned"),
)
#: The category whose cases are access-logged on every read and never leave the centre in alerts.
WOMEN_AND_CHILDREN = "violence_women_children"
#: Classifications held against the caller's number (history, prank log, queue priority). Must stay
#: equal to the routing's ``ABUSE_KINDS``, or a flag would be written that routing never counts.
FLAGGING_CLASSIFICATIONS = frozenset({"prank", "hoax", "silent"})

CATEGORY_CODES = frozenset(c.code for c in CATEGORIES)
PRIORITY_CODES = frozenset(c.code for c in PRIORITIES)
VICTIM_CONDITION_CODES = frozenset(c.code for c in VICTIM_CONDITIONS)
CLASSIFICATION_CODES = frozenset(c.code for c in CLASSIFICATIONS)
FLAG_CODES = frozenset(c.code for c in FLAGS)


def labels(codes: tuple[Code, ...]) -> list[dict[str, str]]:
    return [c.as_json() for c in codes]
