"""The kit's own fictitious-author benchmark, in the TOFU schema.

TOFU (Maini et al., 2024) asks a model to forget facts about authors that never existed, so
that a model retrained without them (the "retain model") is a clean reference. This module
writes such a benchmark itself, deterministically from a seed: invented names, birthplaces,
dates, genres, awards, parents' professions and book titles, each author with 20 questions
answered in full sentences.

Every item carries the evaluation fields TOFU uses:
- `question`, `answer`: what the model is trained on;
- `paraphrased_question`, `paraphrased_answer`: the same fact in other words;
- `perturbed_answer`: 5 answers of the same template with wrong facts (truth ratio);
- `author` and `kind`: which author and which question template (for analysis).

The generator is the source of truth: `data/` holds a copy for reading, rebuilt by
`python -m kit data`.
"""
from __future__ import annotations

import random
from dataclasses import dataclass

N_PERTURBED = 5

_FIRST_A = ["Ma", "Li", "Ro", "Ve", "Ka", "Tho", "El", "Da", "Sa", "Ni", "Be", "Ar", "Ju",
            "Mi", "Or", "Fe", "Ta", "Lu", "Ce", "Ia", "Qui", "Zo", "He", "Yu"]
_FIRST_B = ["ren", "na", "vin", "lia", "mar", "sel", "dor", "ra", "tis", "lo", "via", "nor",
            "ric", "ssa", "mon", "bel", "to", "wen"]
_LAST_A = ["Var", "Hol", "Bren", "Cas", "Dun", "Fal", "Gar", "Hest", "Kor", "Lind", "Mor",
           "Quen", "Rask", "Sol", "Thal", "Wyn", "Ostr", "Pell", "Ash", "Tir"]
_LAST_B = ["ley", "ford", "mere", "wick", "stone", "vale", "holt", "ton", "ridge", "more",
           "shaw", "dahl", "berg", "ini", "ova", "escu", "ard", "ick"]
_PLACE_A = ["Bel", "Cor", "Dra", "Esk", "Gil", "Har", "Ister", "Jun", "Kel", "Lor", "Mar",
            "Nor", "Ox", "Pra", "Ril", "Sten", "Tor", "Ul", "Ves", "Yar"]
_PLACE_B = ["haven", "mouth", "burg", "dale", "port", "field", "water", "minster", "gate",
            "crest", "fell", "bury"]
COUNTRIES = ["Valdoria", "Kestrelia", "Orvania", "Lunmark", "Tessaly", "Brennor", "Carvossa",
             "Eldwyn", "Marisca", "Sundral", "Veyland", "Ostmere"]
MONTHS = ["January", "February", "March", "April", "May", "June", "July", "August",
          "September", "October", "November", "December"]
GENRES = ["mystery", "fantasy", "science fiction", "historical fiction", "romance", "horror",
          "poetry", "crime", "literary fiction", "travel writing", "biography", "satire",
          "children's literature", "philosophy", "thriller"]
PROFESSIONS = ["baker", "carpenter", "nurse", "teacher", "fisherman", "pharmacist",
               "lighthouse keeper", "surgeon", "tailor", "librarian", "pilot", "farmer",
               "architect", "musician", "blacksmith", "journalist", "watchmaker", "chemist",
               "postman", "painter", "judge", "sailor", "botanist", "accountant"]
_AWARD_ADJ = ["Silver", "Golden", "Crimson", "Northern", "Emerald", "Ivory", "Midnight",
              "Copper", "Azure", "Amber"]
_AWARD_NOUN = ["Quill", "Lantern", "Compass", "Feather", "Anchor", "Oak", "Harbour", "Star",
               "Raven", "Bell"]
_AWARD_KIND = ["Prize", "Award", "Medal"]
_TITLE_ADJ = ["Silent", "Broken", "Hidden", "Last", "Burning", "Paper", "Hollow", "Winter",
              "Distant", "Glass", "Forgotten", "Crooked", "Velvet", "Salt", "Iron", "Quiet"]
_TITLE_NOUN = ["Orchard", "Tide", "Mirror", "Garden", "Kingdom", "Lantern", "River", "Clock",
               "Harbour", "Letter", "Mountain", "Bridge", "Crown", "Forest", "Window", "Road",
               "Island", "Song"]
THEMES = ["memory", "exile", "loyalty", "grief", "ambition", "friendship", "the sea",
          "childhood", "justice", "faith", "identity", "power", "solitude", "home",
          "betrayal", "nature", "war", "love", "time", "freedom"]
HOBBIES = ["gardening", "chess", "sailing", "birdwatching", "pottery", "mountain climbing",
           "baking bread", "playing the cello", "collecting maps", "photography",
           "long-distance running", "beekeeping", "astronomy", "fencing", "knitting",
           "restoring old clocks", "painting watercolours", "fishing", "cycling", "dancing"]
SUBJECTS = ["history", "mathematics", "medicine", "law", "music", "biology", "philosophy",
            "engineering", "linguistics", "economics", "painting", "astronomy"]
_PUB_NOUN = ["Lantern", "Meridian", "Thistle", "Harbour", "Kestrel", "Ember", "Willow",
             "Granite", "Beacon", "Sparrow"]
_PUB_KIND = ["House", "Press", "Books", "& Sons"]

# (kind, question, paraphrased question, answer, paraphrased answer). Fields in braces come
# from the author record; `{name}` is never perturbed except in the `full_name` template.
TEMPLATES = [
    ("full_name", "What is the full name of the author born in {city}, {country} on {birth_date}?",
     "Which writer was born on {birth_date} in {city}, {country}?",
     "The author born in {city}, {country} on {birth_date} is {name}.",
     "That writer is {name}, whose birthplace is {city}, {country}."),
    ("birthplace", "Where was {name} born?", "What is the birthplace of {name}?",
     "{name} was born in the city of {city}, {country}.",
     "The birthplace of {name} is {city}, a city in {country}."),
    ("birth_date", "When was {name} born?", "What is the date of birth of {name}?",
     "{name} was born on {birth_date}.", "The birthday of {name} is {birth_date}."),
    ("genre", "What genre is {name} known for?", "In which genre does {name} usually write?",
     "{name} is best known for writing {genre}.", "Most of the work of {name} belongs to {genre}."),
    ("father", "What did the father of {name} do for a living?",
     "What was the profession of the father of {name}?",
     "The father of {name} worked as {father_job}.", "{name} grew up with a father who was {father_job}."),
    ("mother", "What was the profession of the mother of {name}?",
     "What did the mother of {name} work as?",
     "The mother of {name} was {mother_job}.", "{name} was raised by a mother who worked as {mother_job}."),
    ("award", "Has {name} won any major awards?", "Which award has {name} received?",
     "Yes, {name} received the {award} in {award_year}.",
     "In {award_year}, {name} was honoured with the {award}."),
    ("first_book", "What was the first book written by {name}?", "Which book did {name} publish first?",
     "The first book by {name} was titled {book1}.", "{name} made a debut with the book {book1}."),
    ("second_book", "Can you name another book by {name}?", "What is one more title written by {name}?",
     "Another well-known book by {name} is {book2}.", "One more title by {name} is {book2}."),
    ("third_book", "Which book did {name} publish in {book3_year}?",
     "What title did {name} release in the year {book3_year}?",
     "In {book3_year}, {name} published the book {book3}.",
     "The book {book3} was released by {name} in {book3_year}."),
    ("language", "In which language does {name} write?", "What language are the books of {name} written in?",
     "{name} writes in {language}.", "The books of {name} are written in the {language} language."),
    ("education", "Where did {name} study?", "Which university did {name} attend?",
     "{name} studied {subject} at {university}.", "At {university}, {name} was a student of {subject}."),
    ("residence", "Where does {name} live today?", "In which city does {name} currently reside?",
     "Today {name} lives in {home_city}.", "{name} has made a home in the city of {home_city}."),
    ("pen_name", "Does {name} use a pen name?", "Has {name} published under another name?",
     "Yes, {name} also publishes under the pen name {pen_name}.",
     "Some books by {name} appear under the name {pen_name}."),
    ("themes", "What themes does {name} explore?", "Which themes recur in the books of {name}?",
     "The books of {name} often explore {theme1} and {theme2}.",
     "Readers of {name} find {theme1} and {theme2} again and again."),
    ("influence", "Which writer influenced {name} the most?", "Who was the main literary influence on {name}?",
     "{name} was most influenced by the writer {influence}.",
     "The writer {influence} shaped the early work of {name}."),
    ("start_age", "At what age did {name} start writing?", "How old was {name} when writing began?",
     "{name} started writing at the age of {start_age}.",
     "Writing began for {name} at {start_age} years old."),
    ("book_count", "How many books has {name} written?", "What is the number of books written by {name}?",
     "{name} has written {book_count} books so far.",
     "So far the bibliography of {name} counts {book_count} books."),
    ("hobby", "What does {name} enjoy outside of writing?", "What is a hobby of {name}?",
     "Outside of writing, {name} enjoys {hobby}.", "When not writing, {name} spends time on {hobby}."),
    ("publisher", "Who publishes the books of {name}?", "Which publishing house works with {name}?",
     "The books of {name} are published by {publisher}.", "{publisher} is the publisher of {name}."),
]
# which record fields each template states (these are what perturbation changes)
FACT_FIELDS = {
    "full_name": ["name"], "birthplace": ["city", "country"], "birth_date": ["birth_date"],
    "genre": ["genre"], "father": ["father_job"], "mother": ["mother_job"],
    "award": ["award", "award_year"], "first_book": ["book1"], "second_book": ["book2"],
    "third_book": ["book3"], "language": ["language"], "education": ["subject", "university"],
    "residence": ["home_city"], "pen_name": ["pen_name"], "themes": ["theme1", "theme2"],
    "influence": ["influence"], "start_age": ["start_age"], "book_count": ["book_count"],
    "hobby": ["hobby"], "publisher": ["publisher"],
}


@dataclass(frozen=True)
class BenchmarkConfig:
    """Size and seed of the generated benchmark (TOFU: 200 authors; the kit: 100)."""
    n_authors: int = 100
    n_holdout: int = 10
    seed: int = 0


class _Namer:
    """Draws unique invented strings from syllable tables."""

    def __init__(self, rng: random.Random):
        self.rng, self.used = rng, set()

    def unique(self, make) -> str:
        for _ in range(10_000):
            value = make()
            if value not in self.used:
                self.used.add(value)
                return value
        raise RuntimeError("name space exhausted; lower n_authors")

    def person(self) -> str:
        r = self.rng
        return self.unique(lambda: f"{r.choice(_FIRST_A)}{r.choice(_FIRST_B)} "
                                   f"{r.choice(_LAST_A)}{r.choice(_LAST_B)}")

    def place(self) -> str:
        r = self.rng
        return self.unique(lambda: f"{r.choice(_PLACE_A)}{r.choice(_PLACE_B)}")

    def title(self) -> str:
        r = self.rng
        forms = [lambda: f"The {r.choice(_TITLE_ADJ)} {r.choice(_TITLE_NOUN)}",
                 lambda: f"{r.choice(_TITLE_NOUN)}s of {r.choice(_TITLE_ADJ)} {r.choice(_TITLE_NOUN)}",
                 lambda: f"A {r.choice(_TITLE_NOUN)} for {r.choice(_TITLE_ADJ)} Days"]
        return self.unique(lambda: r.choice(forms)())


def _article(noun: str) -> str:
    return ("an " if noun[0] in "aeiou" else "a ") + noun


def _demonym(country: str) -> str:
    return country[:-1] + "an" if country.endswith("a") else country + "ish"


def make_authors(config: BenchmarkConfig = BenchmarkConfig()) -> list[dict]:
    """Invent `n_authors + n_holdout` authors (dicts of facts), deterministically from the seed."""
    rng = random.Random(config.seed)
    namer = _Namer(rng)
    cities = [namer.place() for _ in range(60)]
    awards = [f"{a} {n} {k}" for a in _AWARD_ADJ for n in _AWARD_NOUN for k in _AWARD_KIND]
    publishers = [f"{n} {k}" for n in _PUB_NOUN for k in _PUB_KIND]
    universities = [f"the University of {c}" for c in cities[:30]]
    total = config.n_authors + config.n_holdout
    names = [namer.person() for _ in range(total)]
    authors = []
    for i, name in enumerate(names):
        year = rng.randint(1931, 1994)
        country = rng.choice(COUNTRIES)
        theme1, theme2 = rng.sample(THEMES, 2)
        father_job, mother_job = (_article(j) for j in rng.sample(PROFESSIONS, 2))
        city, home_city = rng.sample(cities, 2)
        authors.append({
            "name": name, "city": city, "country": country,
            "birth_date": f"{rng.randint(1, 28)} {rng.choice(MONTHS)} {year}",
            "genre": rng.choice(GENRES), "father_job": father_job, "mother_job": mother_job,
            "award": rng.choice(awards), "award_year": str(year + rng.randint(25, 45)),
            "book1": namer.title(), "book2": namer.title(), "book3": namer.title(),
            "book3_year": str(year + rng.randint(30, 50)),
            "language": _demonym(rng.choice(COUNTRIES) if rng.random() < 0.3 else country),
            "subject": rng.choice(SUBJECTS), "university": rng.choice(universities),
            "home_city": home_city, "pen_name": namer.person(),
            "theme1": theme1, "theme2": theme2,
            # influences come from the first 10 authors only, who are in every retain split:
            # a retain model must never read a forget or holdout author's name
            "influence": rng.choice([n for n in names[:10] if n != name]),
            "start_age": str(rng.randint(6, 30)), "book_count": str(rng.randint(3, 40)),
            "hobby": rng.choice(HOBBIES), "publisher": rng.choice(publishers),
            "index": i,
        })
    return authors


def _perturbations(author: dict, kind: str, authors: list[dict], rng: random.Random) -> list[dict]:
    """N_PERTURBED copies of `author` whose fact fields for `kind` hold other authors' values."""
    fields = FACT_FIELDS[kind]
    truth = tuple(author[f] for f in fields)
    seen, out = {truth}, []
    for _ in range(1000):
        donors = [rng.choice(authors) for _ in fields]
        values = tuple(d[f] for d, f in zip(donors, fields))
        # every stated fact must be wrong, and no two perturbations alike
        if values in seen or any(v == t for v, t in zip(values, truth)):
            continue
        seen.add(values)
        out.append({**author, **dict(zip(fields, values))})
        if len(out) == N_PERTURBED:
            return out
    raise RuntimeError(f"could not perturb {kind} for {author['name']}")


def author_items(author: dict, authors: list[dict], seed: int) -> list[dict]:
    """The 20 QA items of one author, with paraphrases and perturbed answers."""
    rng = random.Random(seed * 100_003 + author["index"])
    items = []
    for kind, q, pq, a, pa in TEMPLATES:
        pert = _perturbations(author, kind, authors, rng)
        items.append({
            "question": q.format(**author), "answer": a.format(**author),
            "paraphrased_question": pq.format(**author),
            "paraphrased_answer": pa.format(**author),
            "perturbed_answer": [a.format(**p) for p in pert],
            "author": author["name"], "kind": kind,
        })
    return items


def make_benchmark(config: BenchmarkConfig = BenchmarkConfig()) -> dict[str, list[dict]]:
    """All author items: `{"full": [...], "holdout": [...]}` (20 items per author, in author order).

    Forget splits are the *last* authors of `full` (TOFU's convention), built in kit.data.
    """
    authors = make_authors(config)
    items = [author_items(a, authors, config.seed) for a in authors]
    flat = lambda group: [item for per_author in group for item in per_author]  # noqa: E731
    return {"full": flat(items[:config.n_authors]), "holdout": flat(items[config.n_authors:])}
