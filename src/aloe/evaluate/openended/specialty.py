"""Tag each question with a medical specialty, so results can be broken down per specialty.

Offline: a keyword classifier (word-prefix stems per specialty; the specialty with the most
distinct stems in the question wins, ties go to the earlier one, no hit means "general medicine").
It is crude but deterministic, free and needs no model. With a model spec, an LLM picks one name
from the same list (cached like every completion); a reply naming no listed specialty counts as
"unclassified", not guessed.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from aloe.models.generator import Generator, GenParams

GENERAL = "general medicine"
UNCLASSIFIED = "unclassified"

KEYWORDS: dict[str, tuple[str, ...]] = {
    "cardiology": ("heart", "cardi", "myocard", "coronary", "arrhythm", "atrial", "ventric", "murmur",
                   "hypertens", "angina", "aort", "valv", "ecg", "electrocardiogra"),
    "pulmonology": ("lung", "pulmon", "asthma", "copd", "pneum", "bronch", "dyspnea", "respirat", "pleur",
                    "cough", "wheez"),
    "gastroenterology": ("liver", "hepat", "gastr", "bowel", "colon", "stomach", "pancrea", "esophag",
                         "diarrh", "abdominal", "crohn", "cirrho", "bile", "biliar", "jaundice"),
    "nephrology & urology": ("kidney", "renal", "nephr", "urin", "bladder", "prostat", "dialysis",
                             "creatinine", "glomerul"),
    "endocrinology": ("diabet", "insulin", "thyro", "adrenal", "pituitar", "cortisol", "glucose",
                      "hormone", "endocrin", "obes"),
    "hematology & oncology": ("anemi", "leukemi", "lymphom", "cancer", "tumor", "carcinom", "platelet",
                              "coagul", "hemoglobin", "chemotherap", "metasta", "sickle", "thrombo"),
    "infectious disease": ("infect", "bacteri", "virus", "viral", "fever", "antibiot", "hiv", "sepsis",
                           "tubercul", "vaccin", "fung", "parasit", "malaria"),
    "neurology": ("brain", "neuro", "seizure", "stroke", "headache", "migraine", "nerve", "epilep",
                  "dementia", "parkinson", "sclerosis", "spinal", "paralys"),
    "psychiatry": ("depress", "anxiety", "psych", "schizo", "bipolar", "suicid", "mood", "alcohol",
                   "substance", "hallucinat", "insomnia"),
    "obstetrics & gynecology": ("pregnan", "gestation", "uter", "ovar", "menstru", "vagin", "cervi",
                                "placent", "labor", "obstetric", "contracept", "fetal", "fetus"),
    "pediatrics": ("infant", "newborn", "neonat", "child", "pediatric", "toddler", "month-old"),
    "dermatology": ("skin", "rash", "derma", "lesion", "eczema", "psoria", "melanom", "prurit"),
    "rheumatology & immunology": ("arthrit", "lupus", "autoimmun", "rheumat", "joint", "immun",
                                  "allerg", "vasculit", "gout"),
    "genetics": ("gene", "genetic", "chromosom", "mutation", "inherit", "syndrome", "autosomal", "x-linked"),
    "pharmacology": ("drug", "dose", "medication", "pharmac", "mechanism of action", "adverse effect",
                     "inhibit", "receptor"),
    "ethics & public health": ("ethic", "consent", "disclos", "confidential", "screening", "incidence",
                               "prevalence", "study", "epidemiolog", "risk ratio"),
}

_PATTERNS = {name: [re.compile(r"\b" + re.escape(stem)) for stem in stems] for name, stems in KEYWORDS.items()}


def keyword_specialty(text: str) -> str:
    lowered = text.lower()
    best, best_hits = GENERAL, 0
    for name, patterns in _PATTERNS.items():
        hits = sum(1 for p in patterns if p.search(lowered))
        if hits > best_hits:
            best, best_hits = name, hits
    return best


def model_specialties(gen: Generator, questions: Sequence[str]) -> list[str]:
    names = [*KEYWORDS, GENERAL]
    listing = "\n".join(f"- {n}" for n in names)
    convs = [[{"role": "user", "content": f"Which medical specialty does this question belong to?\n\n{q}\n\n"
               f"Reply with exactly one name from this list and nothing else:\n{listing}"}] for q in questions]
    replies = gen.chat(convs, GenParams(max_new_tokens=16, temperature=0.0))
    return [parse_specialty(r, names) for r in replies]


def parse_specialty(reply: str, names: Sequence[str]) -> str:
    """The one listed name the reply contains (longest match first); otherwise unclassified."""
    lowered = reply.lower()
    for n in sorted(names, key=len, reverse=True):
        if n in lowered:
            return n
    return UNCLASSIFIED
