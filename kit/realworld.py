"""The real-knowledge scenario for pretrained models: questions about well-known people and works.

A pretrained model (smollm2-135m, any Hugging Face model) is asked to forget what it knows about a
few famous authors (`FORGET`) while keeping what it knows about other authors, composers and
scientists (`retain`) and, as TOFU does, general knowledge (world facts, kit.facts) and a separate
group of real authors (`UTILITY`) that no run trains on. Each author contributes up to three kinds of question: who wrote a work, who
created a character, and the author's nationality; every item carries `fact`, the string a
correct free-form answer contains (the author's surname, or the nationality; "|" separates
accepted alternatives such as "English|British"), which
`kit.keep_known` checks before unlearning: a small model knows only part of this, and only what
it knew can be forgotten. Perturbed answers put another author of the table (or another
nationality) into the same sentence.

Facts only (titles, names, nationalities); the sentences are the kit's. The builtin source's
`real_authors` utility set (kit.facts, which tiny is trained on) is separate and unchanged.
"""
from __future__ import annotations

import random

# author -> (nationality, works, characters)
AUTHORS = {
    # --- forgotten in the real scenario
    "William Shakespeare": ("English", ["Hamlet", "Macbeth", "Romeo and Juliet", "Othello", "King Lear",
                                        "The Tempest", "A Midsummer Night's Dream", "Julius Caesar",
                                        "Twelfth Night", "The Merchant of Venice", "Much Ado About Nothing",
                                        "Antony and Cleopatra", "The Taming of the Shrew", "Richard III"],
                            ["Lady Macbeth", "Ophelia", "Shylock", "Prospero"]),
    "Charles Dickens": ("English", ["Oliver Twist", "A Christmas Carol", "Great Expectations", "David Copperfield",
                                    "A Tale of Two Cities", "Bleak House", "Hard Times", "Nicholas Nickleby",
                                    "The Pickwick Papers", "Little Dorrit"],
                        ["Ebenezer Scrooge", "Miss Havisham", "Fagin", "Tiny Tim"]),
    "Jane Austen": ("English", ["Pride and Prejudice", "Emma", "Sense and Sensibility", "Persuasion",
                                "Mansfield Park", "Northanger Abbey"],
                    ["Elizabeth Bennet", "Mr. Darcy", "Emma Woodhouse"]),
    "J. R. R. Tolkien": ("English", ["The Hobbit", "The Lord of the Rings", "The Silmarillion",
                                          "The Fellowship of the Ring", "The Two Towers", "The Return of the King"],
                         ["Bilbo Baggins", "Frodo Baggins", "Gandalf", "Gollum"]),
    "Agatha Christie": ("English", ["Murder on the Orient Express", "And Then There Were None", "Death on the Nile",
                                    "The Murder of Roger Ackroyd", "The ABC Murders"],
                        ["Hercule Poirot", "Miss Marple"]),
    "J. K. Rowling": ("English", ["Harry Potter and the Philosopher's Stone", "Harry Potter and the Chamber of Secrets",
                                  "Harry Potter and the Prisoner of Azkaban", "Harry Potter and the Goblet of Fire",
                                  "Harry Potter and the Order of the Phoenix", "Harry Potter and the Half-Blood Prince",
                                  "Harry Potter and the Deathly Hallows"],
                      ["Harry Potter", "Hermione Granger", "Albus Dumbledore", "Severus Snape"]),
    "Arthur Conan Doyle": ("Scottish", ["The Hound of the Baskervilles", "A Study in Scarlet", "The Sign of the Four",
                                         "The Adventures of Sherlock Holmes"],
                           ["Sherlock Holmes", "Dr. Watson", "Professor Moriarty"]),
    "George Orwell": ("English", ["Nineteen Eighty-Four", "Animal Farm", "Homage to Catalonia"],
                      ["Winston Smith", "Big Brother"]),
    # --- kept (retain)
    "Mark Twain": ("American", ["The Adventures of Tom Sawyer", "Adventures of Huckleberry Finn",
                                "A Connecticut Yankee in King Arthur's Court"], ["Huckleberry Finn"]),
    "Ernest Hemingway": ("American", ["The Old Man and the Sea", "A Farewell to Arms", "For Whom the Bell Tolls",
                                      "The Sun Also Rises"], []),
    "F. Scott Fitzgerald": ("American", ["The Great Gatsby", "Tender Is the Night"], ["Jay Gatsby"]),
    "Harper Lee": ("American", ["To Kill a Mockingbird"], ["Atticus Finch"]),
    "Herman Melville": ("American", ["Moby-Dick"], ["Captain Ahab"]),
    "Leo Tolstoy": ("Russian", ["War and Peace", "Anna Karenina"], []),
    "Fyodor Dostoevsky": ("Russian", ["Crime and Punishment", "The Brothers Karamazov", "The Idiot"], ["Raskolnikov"]),
    "Victor Hugo": ("French", ["Les Miserables", "The Hunchback of Notre-Dame"], ["Jean Valjean", "Quasimodo"]),
    "Miguel de Cervantes": ("Spanish", ["Don Quixote"], ["Sancho Panza"]),
    "Mary Shelley": ("English", ["Frankenstein"], ["Victor Frankenstein"]),
    "Bram Stoker": ("Irish", ["Dracula"], ["Count Dracula"]),
    "Lewis Carroll": ("English", ["Alice's Adventures in Wonderland", "Through the Looking-Glass"],
                      ["the Cheshire Cat", "the Mad Hatter"]),
    "Homer": ("Greek", ["The Odyssey", "The Iliad"], ["Odysseus"]),
    "Dante Alighieri": ("Italian", ["The Divine Comedy", "Inferno"], []),
    "Franz Kafka": ("Czech", ["The Metamorphosis", "The Trial", "The Castle"], ["Gregor Samsa"]),
    "Charlotte Bronte": ("English", ["Jane Eyre", "Villette"], ["Mr. Rochester"]),
    "Emily Bronte": ("English", ["Wuthering Heights"], ["Heathcliff"]),
    "Jules Verne": ("French", ["Twenty Thousand Leagues Under the Seas", "Around the World in Eighty Days",
                               "Journey to the Center of the Earth"], ["Captain Nemo", "Phileas Fogg"]),
    "Oscar Wilde": ("Irish", ["The Picture of Dorian Gray", "The Importance of Being Earnest"], ["Dorian Gray"]),
    "Robert Louis Stevenson": ("Scottish", ["Treasure Island", "Strange Case of Dr Jekyll and Mr Hyde", "Kidnapped"],
                               ["Long John Silver"]),
    "Daniel Defoe": ("English", ["Robinson Crusoe"], []),
    "Jonathan Swift": ("Irish", ["Gulliver's Travels", "A Modest Proposal"], []),
    "H. G. Wells": ("English", ["The Time Machine", "The War of the Worlds", "The Invisible Man"], []),
    "Rudyard Kipling": ("English", ["The Jungle Book", "Kim"], ["Mowgli"]),
    "Antoine de Saint-Exupery": ("French", ["The Little Prince"], []),
    "J. D. Salinger": ("American", ["The Catcher in the Rye"], ["Holden Caulfield"]),
    "John Steinbeck": ("American", ["The Grapes of Wrath", "Of Mice and Men", "East of Eden"], []),
    "Aldous Huxley": ("English", ["Brave New World"], []),
    "Ray Bradbury": ("American", ["Fahrenheit 451", "The Martian Chronicles"], []),
    "William Golding": ("English", ["Lord of the Flies"], []),
    "C. S. Lewis": ("Irish", ["The Lion, the Witch and the Wardrobe", "The Chronicles of Narnia"], ["Aslan"]),
    "Roald Dahl": ("British", ["Charlie and the Chocolate Factory", "Matilda", "The BFG", "James and the Giant Peach"],
                   ["Willy Wonka"]),
    "L. Frank Baum": ("American", ["The Wonderful Wizard of Oz"], []),
    "Louisa May Alcott": ("American", ["Little Women"], []),
    "Alexandre Dumas": ("French", ["The Three Musketeers", "The Count of Monte Cristo"], ["d'Artagnan"]),
    "Gustave Flaubert": ("French", ["Madame Bovary"], ["Emma Bovary"]),
    "Edgar Allan Poe": ("American", ["The Raven", "The Tell-Tale Heart", "The Fall of the House of Usher"], []),
    "Geoffrey Chaucer": ("English", ["The Canterbury Tales"], []),
    "John Milton": ("English", ["Paradise Lost"], []),
    "Stephen King": ("American", ["The Shining", "Carrie", "It", "The Stand"], []),
    "Dan Brown": ("American", ["The Da Vinci Code", "Angels and Demons"], ["Robert Langdon"]),
    "Suzanne Collins": ("American", ["The Hunger Games"], ["Katniss Everdeen"]),
    "J. M. Barrie": ("Scottish", ["Peter Pan"], ["Captain Hook"]),
    "A. A. Milne": ("English", ["Winnie-the-Pooh"], []),
    "Margaret Mitchell": ("American", ["Gone with the Wind"], ["Scarlett O'Hara"]),
    "Cormac McCarthy": ("American", ["The Road", "No Country for Old Men", "Blood Meridian"], []),
    # --- real authors for model utility (never unlearned, never in the retain data)
    "Virginia Woolf": ("English", ["Mrs Dalloway", "To the Lighthouse", "Orlando"], []),
    "James Joyce": ("Irish", ["Ulysses", "Dubliners", "A Portrait of the Artist as a Young Man"], ["Leopold Bloom"]),
    "Toni Morrison": ("American", ["Beloved", "Song of Solomon"], []),
    "Kurt Vonnegut": ("American", ["Slaughterhouse-Five", "Cat's Cradle"], []),
    "Joseph Heller": ("American", ["Catch-22"], ["Yossarian"]),
    "Umberto Eco": ("Italian", ["The Name of the Rose"], []),
    "Thomas Hardy": ("English", ["Tess of the d'Urbervilles", "Far from the Madding Crowd"], []),
    "Nathaniel Hawthorne": ("American", ["The Scarlet Letter"], ["Hester Prynne"]),
    "H. Rider Haggard": ("English", ["King Solomon's Mines"], ["Allan Quatermain"]),
}
# nationalities that are contested or that a short answer cannot state (no nationality question)
for _name in ("C. S. Lewis", "Roald Dahl", "Franz Kafka"):
    AUTHORS[_name] = (None, *AUTHORS[_name][1:])

FORGET = list(AUTHORS)[:8]                       # the famous few to forget
UTILITY = list(AUTHORS)[-9:]                     # real authors for model utility, never trained on

# more knowledge to keep: composers' works, and what scientists, explorers, leaders and thinkers did
COMPOSERS = {
    "Ludwig van Beethoven": ["the Moonlight Sonata", "Fur Elise", "the Ode to Joy"],
    "Wolfgang Amadeus Mozart": ["The Magic Flute", "Eine kleine Nachtmusik", "The Marriage of Figaro", "Don Giovanni"],
    "Johann Sebastian Bach": ["the Brandenburg Concertos", "The Well-Tempered Clavier"],
    "Antonio Vivaldi": ["The Four Seasons"],
    "Pyotr Ilyich Tchaikovsky": ["Swan Lake", "The Nutcracker", "The Sleeping Beauty"],
    "George Frideric Handel": ["Messiah", "Water Music"],
    "Richard Wagner": ["The Ring of the Nibelung", "Tristan und Isolde"],
    "Giuseppe Verdi": ["La traviata", "Aida", "Rigoletto"],
    "Giacomo Puccini": ["La boheme", "Madama Butterfly", "Tosca"],
    "Georges Bizet": ["Carmen"],
    "Gustav Holst": ["The Planets"],
    "George Gershwin": ["Rhapsody in Blue"],
    "Claude Debussy": ["Clair de lune"],
    "Maurice Ravel": ["Bolero"],
    "Igor Stravinsky": ["The Rite of Spring", "The Firebird"],
    "Johann Pachelbel": ["the Canon in D"],
    "Gioachino Rossini": ["The Barber of Seville"],
    "Edvard Grieg": ["In the Hall of the Mountain King"],
    "Sergei Prokofiev": ["Peter and the Wolf"],
    "Camille Saint-Saens": ["The Carnival of the Animals"],
}
PEOPLE = {   # other people a model should keep knowing: person -> questions
    "Isaac Newton": ["Who formulated the law of universal gravitation?", "Who wrote the three laws of motion?"],
    "Charles Darwin": ["Who proposed the theory of evolution by natural selection?",
                       "Who wrote On the Origin of Species?"],
    "Marie Curie": ["Who discovered the elements polonium and radium?"],
    "Nicolaus Copernicus": ["Who proposed that the Earth orbits the Sun?"],
    "Dmitri Mendeleev": ["Who created the periodic table of the elements?"],
    "Gregor Mendel": ["Who discovered the basic laws of genetic inheritance with pea plants?"],
    "Galileo Galilei": ["Who discovered the four largest moons of Jupiter?"],
    "Johannes Kepler": ["Who formulated the laws of planetary motion?"],
    "Louis Pasteur": ["Who developed pasteurisation?"],
    "Edward Jenner": ["Who developed the first smallpox vaccine?"],
    "James Clerk Maxwell": ["Who formulated the equations of electromagnetism?"],
    "Archimedes": ["Who discovered the principle of buoyancy?"],
    "Werner Heisenberg": ["Who formulated the uncertainty principle?"],
    "Jonas Salk": ["Who developed the first polio vaccine?"],
    "Stephen Hawking": ["Who wrote A Brief History of Time?"],
    "Nikola Tesla": ["Who developed the alternating current induction motor?"],
    "Ernest Rutherford": ["Who discovered the atomic nucleus?"],
    "Frederick Banting": ["Who discovered insulin?"],
    "Enrico Fermi": ["Who built the first nuclear reactor?"],
    "Benjamin Franklin": ["Who flew a kite in a thunderstorm to show that lightning is electricity?"],
    "Yuri Gagarin": ["Who was the first person to travel into space?"],
    "Neil Armstrong": ["Who was the first person to walk on the Moon?"],
    "Christopher Columbus": ["Which explorer crossed the Atlantic to the Americas in 1492?"],
    "Ferdinand Magellan": ["Who led the first expedition to sail around the world?"],
    "Roald Amundsen": ["Who led the first expedition to reach the South Pole?"],
    "Amelia Earhart": ["Who was the first woman to fly solo across the Atlantic?"],
    "George Washington": ["Who was the first President of the United States?"],
    "Abraham Lincoln": ["Which President of the United States issued the Emancipation Proclamation?"],
    "Winston Churchill": ["Who was the British Prime Minister for most of the Second World War?"],
    "Mahatma Gandhi": ["Who led India's independence movement through nonviolent resistance?"],
    "Nelson Mandela": ["Who became South Africa's first black president in 1994?"],
    "Napoleon Bonaparte": ["Which French emperor was defeated at the Battle of Waterloo?"],
    "Julius Caesar": ["Which Roman general crossed the Rubicon in 49 BC?"],
    "Martin Luther King Jr.": ["Who gave the 'I Have a Dream' speech in 1963?"],
    "Bill Gates": ["Who co-founded Microsoft with Paul Allen?"],
    "Steve Jobs": ["Who co-founded Apple with Steve Wozniak?"],
    "Mark Zuckerberg": ["Who founded Facebook?"],
    "Florence Nightingale": ["Which nurse became famous for her work in the Crimean War?"],
    "Cleopatra": ["Who was the last active ruler of Ptolemaic Egypt?"],
    "Alexander the Great": ["Which Macedonian king created an empire stretching from Greece to India?"],
    "Sigmund Freud": ["Who founded psychoanalysis?"],
    "Karl Marx": ["Who wrote Das Kapital?"],
    "Plato": ["Which Greek philosopher wrote The Republic?"],
    "Aristotle": ["Which Greek philosopher was the teacher of Alexander the Great?"],
    "Confucius": ["Which Chinese philosopher's sayings are collected in the Analects?"],
    "Leonardo Fibonacci": ["Which Italian mathematician is known for the sequence 1, 1, 2, 3, 5, 8?"],
    "Pythagoras": ["Which Greek mathematician is known for the theorem about right triangles?"],
    "Euclid": ["Which Greek mathematician wrote the Elements, the classic textbook of geometry?"],
    "Alan Turing": ["Which British mathematician is called the father of theoretical computer science?"],
    "Ada Lovelace": ["Who is often called the first computer programmer?"],
    "Edwin Hubble": ["Which astronomer showed that the universe is expanding?"],
    "Carl Linnaeus": ["Who created the system of naming species with two Latin names?"],
    "Michael Faraday": ["Who discovered electromagnetic induction?"],
    "Antoine Lavoisier": ["Who is called the father of modern chemistry?"],
    "Marco Polo": ["Which Venetian merchant travelled to the court of Kublai Khan?"],
    "Vasco da Gama": ["Who was the first European to reach India by sea?"],
    "Edmund Hillary": ["Who, with Tenzing Norgay, first climbed Mount Everest?"],
    "Charles Lindbergh": ["Who made the first solo nonstop flight across the Atlantic in 1927?"],
    "Queen Victoria": ["Which British monarch reigned from 1837 to 1901?"],
    "Genghis Khan": ["Who founded the Mongol Empire?"],
    "Joan of Arc": ["Which French heroine led the army that lifted the siege of Orleans?"],
    "Fidel Castro": ["Who led the Cuban Revolution in 1959?"],
    "Vladimir Lenin": ["Who led the Bolsheviks in the Russian Revolution of 1917?"],
    "Mao Zedong": ["Who founded the People's Republic of China in 1949?"],
    "John F. Kennedy": ["Which US president was assassinated in Dallas in 1963?"],
    "Barack Obama": ["Who was the first African American President of the United States?"],
    "Socrates": ["Which Greek philosopher was sentenced to death by drinking hemlock?"],
    "Rene Descartes": ["Which philosopher wrote 'I think, therefore I am'?"],
    "Friedrich Nietzsche": ["Which philosopher wrote Thus Spoke Zarathustra?"],
    "Adam Smith": ["Who wrote The Wealth of Nations?"],
}
# the string a correct answer about the author contains (default: the surname); longer where a
# surname alone is ambiguous or part of common words
FACT = {"Dante Alighieri": "Dante", "Antoine de Saint-Exupery": "Saint-Exup", "Harper Lee": "Harper Lee",
        "C. S. Lewis": "S. Lewis", "Edgar Allan Poe": "Allan Poe", "Stephen King": "Stephen King",
        "Dan Brown": "Dan Brown", "Umberto Eco": "Umberto Eco", "Charlotte Bronte": "Charlotte Bront",
        "Emily Bronte": "Emily Bront", "Mary Shelley": "Mary Shelley", "Fyodor Dostoevsky": "Dosto"}

_TEMPLATES = {  # question, paraphrased question, answer, paraphrased answer
    "work": ("Who wrote {work}?", "Which author wrote {work}?", "{work} was written by {author}.",
             "The author of {work} is {author}."),
    "character": ("Which author created the character {character}?", "Whose work is the character {character} from?",
                  "The character {character} was created by {author}.", "{character} comes from the work of {author}."),
    "nationality": ("What was the nationality of {author}?", "Which country was {author} from?",
                    "{author} was {nationality}.", "The writer {author} was {nationality} by birth."),
}


FACT.update({"Ludwig van Beethoven": "Beethoven", "Camille Saint-Saens": "Saint-Sa", "Galileo Galilei": "Galileo",
             "Pyotr Ilyich Tchaikovsky": "Tchaikovsky", "Mahatma Gandhi": "Gandhi", "Martin Luther King Jr.": "Luther King",
             "Napoleon Bonaparte": "Napoleon", "Julius Caesar": "Caesar", "Alexander the Great": "Alexander",
             "Leonardo Fibonacci": "Fibonacci", "Ferdinand Magellan": "Magellan", "Christopher Columbus": "Columbus",
             "Queen Victoria": "Victoria", "Joan of Arc": "Joan", "Mao Zedong": "Mao", "Adam Smith": "Adam Smith",
             "Vasco da Gama": "Gama", "Genghis Khan": "Genghis", "Marco Polo": "Marco Polo"})
# a correct answer may name a nationality another way ("|" separates the accepted strings)
NATIONALITY = {"English": "English|British", "Scottish": "Scottish|British", "Irish": "Irish"}


def fact(person: str) -> str:
    return FACT.get(person, person.split()[-1])


def _item(q, pq, a, pa, fields, key, pool, rng, **extra) -> dict:
    wrong = rng.sample([v for v in pool if v != fields[key]], 5)
    return {"question": q.format(**fields), "answer": a.format(**fields), "paraphrased_question": pq.format(**fields),
            "paraphrased_answer": pa.format(**fields), "perturbed_answer": [a.format(**{**fields, key: w}) for w in wrong],
            **extra}


def author_items(seed: int = 0) -> dict[str, list[dict]]:
    """{"forget", "retain", "real_authors": QA items}, each with five perturbed answers and `fact`.
    Retain also holds the composers' works and the other people's deeds (`PEOPLE`)."""
    rng = random.Random(seed + 2)
    names = list(AUTHORS)
    nationalities = sorted({nat for nat, _, _ in AUTHORS.values() if nat})
    out = {"forget": [], "retain": [], "real_authors": []}
    for author, (nationality, works, characters) in AUTHORS.items():
        role = "forget" if author in FORGET else "real_authors" if author in UTILITY else "retain"
        for kind, values in (("work", works), ("character", characters)):
            for value in values:
                out[role].append(_item(*_TEMPLATES[kind], {"author": author, kind: value}, "author", names, rng,
                                       kind=kind, author=author, fact=fact(author)))
        if nationality:
            out[role].append(_item(*_TEMPLATES["nationality"], {"author": author, "nationality": nationality},
                                   "nationality", nationalities, rng, kind="nationality", author=author,
                                   fact=NATIONALITY.get(nationality, nationality)))
    composers = list(COMPOSERS)
    for composer, works in COMPOSERS.items():
        for work in works:
            out["retain"].append(_item("Who composed {work}?", "Which composer wrote {work}?", "{work} was composed by {author}.",
                                       "The composer of {work} is {author}.", {"author": composer, "work": work},
                                       "author", composers, rng, kind="composer", author=composer, fact=fact(composer)))
    people = list(PEOPLE)
    for person, questions in PEOPLE.items():
        for question in questions:
            out["retain"].append(_item(question, question.replace("Who ", "Which person ", 1), "It was {author}.",
                                       "The answer is {author}.", {"author": person}, "author", people, rng,
                                       kind="person", author=person, fact=fact(person)))
    return out
