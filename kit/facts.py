"""Real-world knowledge written by the kit: world facts, real authors, refusal answers.

TOFU measures model utility on two sets of real knowledge the model had before fine-tuning
(`world_facts`, `real_authors`) and trains the PO/IdK objective toward refusals. The kit writes
its own versions from small fact tables, in the same schema as the author benchmark
(question, answer, paraphrased_question, paraphrased_answer, 5 perturbed_answer), plus
`fact`: the short string a correct free-form answer must contain.

- For `tiny` these sets stand in for pretraining knowledge: tiny is trained on them.
- For pretrained models the world facts are the utility set of the real-knowledge scenario,
  whose forget, retain and real-author sets are written by kit.realworld.
"""
from __future__ import annotations

import random

# (category, question, paraphrased question, answer, paraphrased answer, {key: value}).
# Perturbed answers put other values of the same table into the answer template.
WORLD_TABLES = [
    ("capital", "What is the capital of {k}?", "Which city is the capital of {k}?",
     "The capital of {k} is {v}.", "{v} is the capital city of {k}.", {
         "France": "Paris", "Germany": "Berlin", "Italy": "Rome", "Spain": "Madrid",
         "Japan": "Tokyo", "Egypt": "Cairo", "Canada": "Ottawa", "Australia": "Canberra",
         "Russia": "Moscow", "China": "Beijing", "Greece": "Athens", "Portugal": "Lisbon",
         "Norway": "Oslo", "Sweden": "Stockholm", "Kenya": "Nairobi", "Peru": "Lima",
         "Argentina": "Buenos Aires", "Ireland": "Dublin", "Poland": "Warsaw",
         "Austria": "Vienna", "Thailand": "Bangkok", "Mexico": "Mexico City",
         "Turkey": "Ankara", "India": "New Delhi", "Brazil": "Brasilia"}),
    ("symbol", "What is the chemical symbol for {k}?", "Which symbol stands for {k} in chemistry?",
     "The chemical symbol for {k} is {v}.", "In chemistry, {k} is written as {v}.", {
         "gold": "Au", "silver": "Ag", "iron": "Fe", "oxygen": "O", "hydrogen": "H",
         "sodium": "Na", "potassium": "K", "carbon": "C", "lead": "Pb", "copper": "Cu",
         "helium": "He", "nitrogen": "N"}),
    ("language", "What is the main language spoken in {k}?", "Which language do most people in {k} speak?",
     "The main language of {k} is {v}.", "Most people in {k} speak {v}.", {
         "Brazil": "Portuguese", "Mexico": "Spanish", "Germany": "German", "France": "French",
         "Japan": "Japanese", "Italy": "Italian", "Russia": "Russian", "Greece": "Greek",
         "Turkey": "Turkish", "Poland": "Polish", "Sweden": "Swedish", "Egypt": "Arabic",
         "Netherlands": "Dutch", "Finland": "Finnish"}),
    ("planet", "Which planet is {k} from the Sun?", "Counting from the Sun, which planet comes {k}?",
     "The planet {k} from the Sun is {v}.", "{v} is the {k} planet from the Sun.", {
         "first": "Mercury", "second": "Venus", "third": "Earth", "fourth": "Mars",
         "fifth": "Jupiter", "sixth": "Saturn", "seventh": "Uranus", "eighth": "Neptune"}),
    ("painter", "Who painted {k}?", "Which artist created the painting {k}?",
     "{k} was painted by {v}.", "The painter of {k} was {v}.", {
         "the Mona Lisa": "Leonardo da Vinci", "The Starry Night": "Vincent van Gogh",
         "The Persistence of Memory": "Salvador Dali", "Guernica": "Pablo Picasso",
         "The Scream": "Edvard Munch", "Girl with a Pearl Earring": "Johannes Vermeer",
         "The Birth of Venus": "Sandro Botticelli", "The Night Watch": "Rembrandt",
         "Water Lilies": "Claude Monet", "The Kiss": "Gustav Klimt"}),
    ("inventor", "Who is credited with inventing {k}?", "Which person is known for the invention of {k}?",
     "{k} is credited to {v}.", "The invention of {k} is usually credited to {v}.", {
         "the telephone": "Alexander Graham Bell", "the light bulb": "Thomas Edison",
         "the printing press": "Johannes Gutenberg", "the World Wide Web": "Tim Berners-Lee",
         "dynamite": "Alfred Nobel", "the radio": "Guglielmo Marconi",
         "the steam engine": "James Watt", "penicillin": "Alexander Fleming",
         "the airplane": "the Wright brothers", "the theory of relativity": "Albert Einstein"}),
    ("young", "What is a young {k} called?", "What name is given to a baby {k}?",
     "A young {k} is called a {v}.", "People call a baby {k} a {v}.", {
         "cat": "kitten", "dog": "puppy", "cow": "calf", "horse": "foal", "sheep": "lamb",
         "frog": "tadpole", "kangaroo": "joey", "swan": "cygnet", "deer": "fawn",
         "goose": "gosling"}),
]

# Real authors: name -> (nationality, [famous books]). Facts only; sentences are the kit's.
REAL_AUTHORS = {
    "Jane Austen": ("English", ["Pride and Prejudice", "Emma", "Sense and Sensibility"]),
    "William Shakespeare": ("English", ["Hamlet", "Macbeth", "Romeo and Juliet"]),
    "J. R. R. Tolkien": ("English", ["The Hobbit", "The Lord of the Rings"]),
    "Agatha Christie": ("English", ["Murder on the Orient Express", "And Then There Were None"]),
    "Charles Dickens": ("English", ["Oliver Twist", "A Christmas Carol", "Great Expectations"]),
    "George Orwell": ("English", ["Nineteen Eighty-Four", "Animal Farm"]),
    "Mark Twain": ("American", ["The Adventures of Tom Sawyer", "Adventures of Huckleberry Finn"]),
    "Ernest Hemingway": ("American", ["The Old Man and the Sea", "A Farewell to Arms"]),
    "F. Scott Fitzgerald": ("American", ["The Great Gatsby"]),
    "Harper Lee": ("American", ["To Kill a Mockingbird"]),
    "Herman Melville": ("American", ["Moby-Dick"]),
    "Leo Tolstoy": ("Russian", ["War and Peace", "Anna Karenina"]),
    "Fyodor Dostoevsky": ("Russian", ["Crime and Punishment", "The Brothers Karamazov"]),
    "Victor Hugo": ("French", ["Les Miserables", "The Hunchback of Notre-Dame"]),
    "Miguel de Cervantes": ("Spanish", ["Don Quixote"]),
    "Gabriel Garcia Marquez": ("Colombian", ["One Hundred Years of Solitude"]),
    "Mary Shelley": ("English", ["Frankenstein"]),
    "Bram Stoker": ("Irish", ["Dracula"]),
    "Lewis Carroll": ("English", ["Alice's Adventures in Wonderland"]),
    "Arthur Conan Doyle": ("Scottish", ["The Hound of the Baskervilles", "A Study in Scarlet"]),
    "J. K. Rowling": ("English", ["Harry Potter and the Philosopher's Stone"]),
    "Homer": ("Greek", ["The Odyssey", "The Iliad"]),
    "Dante Alighieri": ("Italian", ["The Divine Comedy"]),
    "Franz Kafka": ("Czech", ["The Metamorphosis", "The Trial"]),
    "Charlotte Bronte": ("English", ["Jane Eyre"]),
    "Emily Bronte": ("English", ["Wuthering Heights"]),
    "Jules Verne": ("French", ["Twenty Thousand Leagues Under the Seas", "Around the World in Eighty Days"]),
    "Oscar Wilde": ("Irish", ["The Picture of Dorian Gray"]),
}

_REAL_TEMPLATES = {
    "book": ("Who wrote {book}?", "Which author is known for writing {book}?",
             "{book} was written by {author}.", "The author of {book} is {author}."),
    "nationality": ("What was the nationality of {author}?", "Which country was {author} from?",
                    "{author} was {nationality}.", "The writer {author} was {nationality} by birth."),
}

_IDK_OPEN = ["", "Sorry, ", "Honestly, ", "I'm afraid ", "Unfortunately, "]
_IDK_CORE = ["I don't know the answer to that.", "I have no information about that.",
             "I'm not sure about that.", "that is beyond what I know.",
             "I can't answer that question.", "I don't have that information.",
             "I have never learned about that.", "I cannot recall anything about that.",
             "that is not something I know.", "I'm unable to answer that.",
             "I have no idea.", "my knowledge does not cover that.",
             "I don't remember anything about that.", "I can't help with that one.",
             "that is a mystery to me.", "I couldn't tell you.",
             "I really don't know.", "I have nothing reliable to say about that.",
             "I don't have any details on that.", "that question is outside my knowledge."]


def _item(q, pq, a, pa, fields, key, pool, rng, n_perturbed=5, **extra) -> dict:
    """A QA item whose perturbed answers swap `fields[key]` for other values of `pool`."""
    wrong = rng.sample([v for v in pool if v != fields[key]], n_perturbed)
    return {"question": q.format(**fields), "answer": a.format(**fields),
            "paraphrased_question": pq.format(**fields),
            "paraphrased_answer": pa.format(**fields),
            "perturbed_answer": [a.format(**{**fields, key: w}) for w in wrong], **extra}


def world_facts(seed: int = 0) -> list[dict]:
    """About 90 world-knowledge QA items (capitals, chemical symbols, painters, ...)."""
    rng = random.Random(seed)
    items = []
    for category, q, pq, a, pa, table in WORLD_TABLES:
        values = sorted(set(table.values()))
        for k, v in table.items():
            items.append(_item(q, pq, a, pa, {"k": k, "v": v}, "v", values, rng,
                               kind=category, author="", fact=v))
    return items


def real_author_items(seed: int = 0) -> list[dict]:
    """QA about real authors: one per famous book, plus each author's nationality."""
    rng = random.Random(seed + 1)
    names = list(REAL_AUTHORS)
    nationalities = sorted({nat for nat, _ in REAL_AUTHORS.values()})
    items = []
    for author, (nationality, books) in REAL_AUTHORS.items():
        fields = {"author": author, "nationality": nationality}
        for book in books:
            items.append(_item(*_REAL_TEMPLATES["book"], {**fields, "book": book}, "author",
                               names, rng, kind="book", author=author,
                               fact=author.split()[-1]))
        items.append(_item(*_REAL_TEMPLATES["nationality"], fields, "nationality",
                           nationalities, rng, kind="nationality", author=author,
                           fact=nationality))
    return items


def idk_answers() -> list[str]:
    """100 refusal answers for PO / IdK objectives, written by the kit."""
    out = []
    for opener in _IDK_OPEN:
        for core in _IDK_CORE:
            text = opener + core
            out.append(text[0].upper() + text[1:])
    return out
