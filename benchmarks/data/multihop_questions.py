"""Writes ``multihop-questions.jsonl``: single-hop and multi-hop questions, labelled, in many phrasings.

    python benchmarks/data/multihop_questions.py          # rewrites the .jsonl beside this file

Every phrasing here was written for memedit (none is taken from a benchmark).
A question is built from a *subject* and a chain of relations:

* a **single-hop** item asks one relation of a named subject, as a question
  ("Which club does {s} play for?"), a zsRE-like question ("What team was
  {s} a member of?"), a cloze ("{s} was born in") or a single-hop question
  with a relative clause ("Name the team that {s} plays for.");
* a **multi-hop** item asks a relation of an entity that is itself described
  by one or two relations of the subject ("Where was the person who wrote
  {s} born?", "Who leads the nation where {s} holds citizenship?").

The inner descriptions and the outer questions come from the same pieces, so
the only difference between the two labels is what the question means: a
named entity, or an entity reached through another fact. Hand-written items
(``HAND``) add phrasings outside the grammar. Each row records its subject,
which decides its side of the project's split
(:meth:`memedit.eval.splits.DataSplit.side_of_subject`).
"""
from __future__ import annotations

import json
import random
from pathlib import Path

OUT = Path(__file__).resolve().parent / "multihop-questions.jsonl"

# subjects by type (a few names with inner "of" and lower-case words, which look like two entities)
SUBJECTS: dict[str, list[str]] = {
    "person": ["Marie Curie", "Kofi Annan", "Haruki Murakami", "Serena Williams", "Lionel Messi", "Frida Kahlo",
               "Nelson Mandela", "Greta Thunberg", "Yo-Yo Ma", "Ada Lovelace", "Pelé", "Angela Davis",
               "Wangari Maathai", "Chinua Achebe", "Bjork", "Satyajit Ray", "Diego Maradona", "Usain Bolt",
               "Jacinda Ardern", "Keanu Reeves", "Malala Yousafzai", "Alan Turing", "Shakira", "Tim Berners-Lee",
               "Rosalind Franklin", "Amartya Sen", "Gabriel Garcia Marquez", "Zinedine Zidane", "Simone Biles",
               "Mary of Teck", "Leonardo da Vinci", "Petra Kvitova", "Joe Ward", "Lena Meyer"],
    "book": ["One Hundred Years of Solitude", "Things Fall Apart", "Norwegian Wood", "The Name of the Rose",
             "Middlemarch", "The Tale of Genji", "Beloved", "Ficciones", "The Master and Margarita",
             "Dune", "Pedro Paramo", "The Leopard"],
    "film": ["Rashomon", "Spirited Away", "Pather Panchali", "The Seventh Seal", "Amelie", "City of God",
             "Parasite", "Metropolis", "Bicycle Thieves", "Cleo from 5 to 7", "Run Lola Run"],
    "software": ["Tetris", "Minecraft", "GNU Emacs", "Blender", "Firefox", "Linux", "Python", "Photoshop",
                 "SimCity", "Pac-Man", "LibreOffice Calc"],
    "company": ["Nokia", "Toyota", "Spotify", "Samsung", "Nintendo", "Airbus", "IKEA", "Tata Motors",
                "Bank of Montreal", "Ferrari", "Alibaba", "Unilever", "Lego"],
    "university": ["University of Tokyo", "Sorbonne", "Heidelberg University", "McGill University",
                   "University of Cape Town", "Tsinghua University", "Trinity College Dublin"],
    "team": ["FC Barcelona", "Boca Juniors", "Chicago Bulls", "Ajax", "New Zealand All Blacks", "Juventus",
             "Golden State Warriors", "Celtic"],
    "country": ["Kenya", "Peru", "Norway", "Vietnam", "Canada", "Ghana", "Portugal", "New Zealand", "Chile",
                "Republic of Ireland", "Mongolia", "Morocco", "Bolivia", "Finland"],
    "city": ["Lagos", "Osaka", "Porto", "Valparaiso", "Krakow", "Mumbai", "Marseille", "Glasgow", "Quebec City",
             "Salvador", "Hamburg", "Rio de Janeiro"],
    "show": ["The Wire", "Doctor Who", "Twin Peaks", "Money Heist", "Dark", "Sherlock", "The Office"],
    "religion": ["Buddhism", "Sikhism", "Islam", "Jainism", "Shinto"],
    "band": ["ABBA", "Radiohead", "Buena Vista Social Club", "The Beatles", "Daft Punk", "Sepultura"],
}
WORKS = ("book", "film", "software", "show")

# Each relation: the subject types it applies to, the type it yields (None: a value that has no relations here),
# single-hop phrasings of its question ({s}: the subject), and descriptions of its object ({s}: the subject).
R: dict[str, dict] = {
    "P27": dict(subj=("person",), obj="country", single=[
        "Which country is {s} a citizen of?", "What is {s}'s nationality?", "What country does {s} hold citizenship in?",
        "Of which nation is {s} a citizen?", "{s} is a citizen of", "{s} holds a passport from",
        "What citizenship does {s} have?", "Name the country that {s} is a national of.",
        "Which country's citizenship does {s} hold?", "The country that {s} is a citizen of is which?",
        "Which is the country whose citizenship {s} holds?", "What nationality is {s}?"],
        np=["the country {s} is a citizen of", "the nation where {s} holds citizenship", "{s}'s country of citizenship",
            "the country whose passport {s} holds", "the country that {s} is a national of",
            "the nation {s} belongs to", "{s}'s home country",
            "the country of which {s} is a citizen", "the country of citizenship of {s}"]),
    "P19": dict(subj=("person",), obj="city", single=[
        "Where was {s} born?", "In which city was {s} born?", "What is the birthplace of {s}?", "{s} was born in",
        "What town was {s} born in?", "{s}'s place of birth is", "Which city is {s} from originally?",
        "Name the city where {s} was born.", "What is the city in which {s} was born?"],
        np=["the city where {s} was born", "{s}'s birthplace", "the town {s} was born in", "the birthplace of {s}",
            "the place where {s} came into the world", "the city that {s} was born in"]),
    "P20": dict(subj=("person",), obj="city", single=[
        "Where did {s} die?", "In which city did {s} pass away?", "{s} died in", "What was the place of death of {s}?",
        "Which town did {s} die in?"],
        np=["the city where {s} died", "the place where {s} passed away", "{s}'s place of death"]),
    "P26": dict(subj=("person",), obj="person", single=[
        "Who is {s} married to?", "Who is the spouse of {s}?", "{s} is married to", "Whom did {s} marry?",
        "What is the name of {s}'s husband or wife?", "{s}'s spouse is", "Who is the person that {s} married?", "The person that is married to {s} is who?"],
        np=["the person {s} is married to", "{s}'s spouse", "the spouse of {s}", "the person who married {s}",
            "{s}'s husband or wife"]),
    "P22": dict(subj=("person",), obj="person", single=[
        "Who is the father of {s}?", "Who was {s}'s dad?", "{s}'s father is", "Who fathered {s}?",
        "What is the name of {s}'s father?", "What's {s}'s father's name?", "Who was the male parent of {s}?",
        "The person who is the father of {s} is who?", "The father of {s} is whom?", "What's {s}'s father like?"],
        np=["{s}'s father", "the father of {s}", "the man who fathered {s}"]),
    "P69": dict(subj=("person",), obj="university", single=[
        "Where did {s} study?", "Which university did {s} attend?", "What is {s}'s alma mater?",
        "{s} graduated from", "Where was {s} educated?", "{s} studied at", "Which school did {s} go to?",
        "What university was {s} educated at?"],
        np=["the university {s} attended", "{s}'s alma mater", "the school where {s} studied",
            "the university that {s} graduated from", "the institution where {s} was educated",
            "the institution attended by {s}", "the school {s} went to"]),
    "P108": dict(subj=("person",), obj="company", single=[
        "Who does {s} work for?", "Who is {s}'s employer?", "{s} works for", "Which company employs {s}?",
        "What organization is {s} employed by?", "Where does {s} work?"],
        np=["the company {s} works for", "{s}'s employer", "the employer of {s}", "the firm that employs {s}",
            "the organization {s} is employed by"]),
    "P54": dict(subj=("person",), obj="team", single=[
        "Which team does {s} play for?", "What club is {s} a member of?", "What sports team was {s} a member of?",
        "{s} plays for", "Which side does {s} play for?", "For which team does {s} play?", "{s} is a player of",
        "What team is {s} on?"],
        np=["the team {s} plays for", "the club {s} is a member of", "{s}'s team", "the side that {s} plays for",
            "the club where {s} plays"]),
    "P106": dict(subj=("person",), obj=None, single=[
        "What is {s}'s occupation?", "What does {s} do for a living?", "What is the profession of {s}?",
        "{s} works as a", "What job does {s} have?", "{s}'s profession is"]),
    "P1412": dict(subj=("person",), obj=None, single=[
        "What language does {s} speak?", "Which languages does {s} speak?", "{s} speaks",
        "What is the mother tongue of {s}?", "In which language does {s} usually write?", "{s}'s native language is"]),
    "P140": dict(subj=("person",), obj="religion", single=[
        "What religion does {s} follow?", "What is {s}'s faith?", "{s} is a follower of",
        "Which religion is {s} affiliated with?", "{s}'s religion is"],
        np=["the religion of {s}", "the faith {s} follows", "{s}'s religion"]),
    "P50": dict(subj=("book",), obj="person", single=[
        "Who wrote {s}?", "Who is the author of {s}?", "{s} was written by", "Who penned {s}?",
        "By whom was {s} written?", "Which writer is responsible for {s}?", "The author of {s} is",
        "Who is the writer that wrote {s}?"],
        np=["the person who wrote {s}", "the author of {s}", "{s}'s author", "the writer of {s}",
            "whoever wrote {s}", "the novelist behind {s}"]),
    "P57": dict(subj=("film",), obj="person", single=[
        "Who directed {s}?", "Who is the director of {s}?", "{s} was directed by", "Who had the role of director in {s}?",
        "Who was behind the camera for {s}?", "Which filmmaker directed {s}?", "The director of {s} is"],
        np=["the director of {s}", "the person who directed {s}", "{s}'s director", "the filmmaker behind {s}",
            "whoever directed {s}"]),
    "P178": dict(subj=("software",), obj="company", single=[
        "Who developed {s}?", "Which company developed {s}?", "{s} was developed by", "Who is the developer of {s}?",
        "Which studio made {s}?", "{s}'s developer is", "By which company was {s} developed?",
        "What company or companies created {s}?"],
        np=["the developer of {s}", "the company that developed {s}", "{s}'s developer", "the studio that made {s}"]),
    "P277": dict(subj=("software",), obj=None, single=[
        "What programming language was {s} written in?", "In which language is {s} programmed?",
        "{s} is programmed in", "What language is the code of {s} in?"]),
    "P112": dict(subj=("company", "band"), obj="person", single=[
        "Who founded {s}?", "Who is the founder of {s}?", "{s} was founded by", "Who started {s}?",
        "Who set up {s}?", "The founder of {s} is", "Who established {s}?"],
        np=["the founder of {s}", "the person who founded {s}", "{s}'s founder", "whoever started {s}",
            "the person that set up {s}"]),
    "P159": dict(subj=("company",), obj="city", single=[
        "Where is {s} headquartered?", "Where is the headquarters of {s}?", "{s} is headquartered in",
        "In which city is {s} based?", "Where are {s}'s head offices?", "The headquarters of {s} are in",
        "What city is {s}'s main office located in?"],
        np=["the city where {s} is headquartered", "the city {s} is based in", "{s}'s headquarters city",
            "the place where {s} has its head office"]),
    "P169": dict(subj=("company",), obj="person", single=[
        "Who is the CEO of {s}?", "Who runs {s}?", "{s}'s chief executive is", "Who is the chief executive of {s}?",
        "Who leads {s} as chief executive?"],
        np=["the CEO of {s}", "{s}'s chief executive", "the person who runs {s}", "the chief executive of {s}"]),
    "P17": dict(subj=("city", "university", "team"), obj="country", single=[
        "Which country is {s} in?", "In what country is {s}?", "{s} is located in the country of",
        "What country does {s} belong to?", "{s} lies in", "Which nation is {s} part of?"],
        np=["the country {s} is in", "the country where {s} lies", "the nation that {s} is part of",
            "the country {s} belongs to"]),
    "P36": dict(subj=("country",), obj="city", single=[
        "What is the capital of {s}?", "Which city is the capital of {s}?", "The capital of {s} is",
        "What is {s}'s capital city?", "Where is the seat of government of {s}?", "{s}'s capital is"],
        np=["the capital of {s}", "{s}'s capital", "the capital city of {s}", "the city that serves as capital of {s}"]),
    "P35": dict(subj=("country",), obj="person", single=[
        "Who is the head of state of {s}?", "Who is the president of {s}?", "Who leads {s}?",
        "The head of state of {s} is", "Who is {s}'s head of state?", "Who rules {s}?"],
        np=["the head of state of {s}", "{s}'s head of state", "the president of {s}", "the leader of {s}"]),
    "P6": dict(subj=("country",), obj="person", single=[
        "Who is the prime minister of {s}?", "Who heads the government of {s}?", "{s}'s head of government is",
        "Who is the head of government in {s}?", "Who leads the government of {s}?",
        "What is the name of the current head of the {s} government?", "Who holds the top office in the {s} government?"],
        np=["the prime minister of {s}", "the head of government of {s}", "{s}'s prime minister",
            "the person who heads the government of {s}"]),
    "P37": dict(subj=("country",), obj=None, single=[
        "What is the official language of {s}?", "What language is spoken officially in {s}?",
        "The official language of {s} is", "Which language has official status in {s}?"]),
    "P38": dict(subj=("country",), obj=None, single=[
        "What is the currency of {s}?", "What money is used in {s}?", "{s}'s currency is",
        "Which currency does {s} use?"]),
    "P30": dict(subj=("country",), obj=None, single=[
        "Which continent is {s} on?", "On what continent is {s}?", "{s} is on the continent of",
        "What continent does {s} belong to?"]),
    "P495": dict(subj=WORKS + ("band",), obj="country", single=[
        "Which country is {s} from?", "What is the country of origin of {s}?", "{s} originated in",
        "Where does {s} come from?", "In which country was {s} created?", "Which country was {s} created in?", "Where was {s} first made?"],
        np=["the country {s} comes from", "the country of origin of {s}", "{s}'s country of origin",
            "the country where {s} was made"]),
    "P136": dict(subj=("book", "film", "band", "show"), obj=None, single=[
        "What genre is {s}?", "What kind of music does {s} play?", "{s}'s genre is", "What is the genre of {s}?"]),
    "P407": dict(subj=("book", "show"), obj=None, single=[
        "What language is {s} written?", "In which language was {s} written?", "{s} is written in",
        "What is the language of {s}?"]),
    "P286": dict(subj=("team",), obj="person", single=[
        "Who coaches {s}?", "Who is the head coach of {s}?", "{s} is coached by", "Who is the manager of {s}?"],
        np=["the coach of {s}", "{s}'s head coach", "the person who coaches {s}", "the manager of {s}"]),
    "P641": dict(subj=("team",), obj=None, single=[
        "What sport does {s} play?", "Which sport is {s} known for?", "{s} plays the sport of"]),
    "P740": dict(subj=("band",), obj="city", single=[
        "Where was {s} formed?", "In which city was {s} founded?", "{s} was formed in", "Where did {s} get together?"],
        np=["the city where {s} was formed", "the place {s} was founded in", "{s}'s home town"]),
    "P449": dict(subj=("show",), obj="company", single=[
        "Which network first aired {s}?", "On what channel did {s} originally air?", "{s} first aired on",
        "Who broadcast {s} originally?", "What is the original channel that {s} aired on?",
        "Which network was the first to show {s}?"],
        np=["the network that first aired {s}", "the channel {s} originally aired on", "{s}'s original broadcaster"]),
    "P1080": dict(subj=("person", "book", "film", "show"), obj="work", single=[
        "To which fictional work does {s} belong in?", "Which fictional universe is {s} from?",
        "{s} is a character from"]),
    "P509": dict(subj=("person",), obj=None, single=[
        "What was the cause of death of {s}?", "What did {s} die of?", "What illness did {s} suffer from?",
        "{s} died of", "What medical condition killed {s}?"]),
    "P570": dict(subj=("person",), obj=None, single=[
        "When did {s} die?", "What is the date of death of {s}?", "In what year did {s} pass away?",
        "{s} died on"]),
    "P551": dict(subj=("person",), obj="city", single=[
        "Where did {s} live?", "Where did {s} live when he died?", "In which city does {s} reside?",
        "{s} lives in", "Where is {s}'s residence?"],
        np=["the city {s} lives in", "the place where {s} resides", "{s}'s home city"]),
    "P607": dict(subj=("person",), obj=None, single=[
        "What war did {s} fight in?", "In which conflict did {s} serve?", "{s} fought in the"]),
    "P1303": dict(subj=("person",), obj=None, single=[
        "What instrument does {s} play?", "Which instrument is {s} known for playing?", "{s} plays the",
        "What kind of instrument does {s} play?"]),
    "P112r": dict(subj=("religion",), obj="person", single=[
        "Who founded {s}?", "Who is regarded as the founder of {s}?"]),

}
# types a relation's object can feed as a subject (a company, a university, a team are all organisations)
FEEDS = {"country": ("country",), "city": ("city",), "person": ("person",), "university": ("university",),
         "company": ("company",), "team": ("team",), "work": (),
         "religion": ("religion",)}

# Hand-written items outside the grammar: (question, label, subject)
HAND: list[tuple[str, str, str]] = [
    ("Who governs the nation where Haruki Murakami holds citizenship?", "multi", "Haruki Murakami"),
    ("Where was the person who wrote Minecraft born?", "multi", "Minecraft"),
    ("What hockey team was Jari Lindqvist a member of?", "single", "Jari Lindqvist"),
    ("What programming language was used to write KDE Sudoku?", "single", "KDE Sudoku"),
    ("What language is Radio Tehran Jazz written?", "single", "Radio Tehran Jazz"),
    ("Who had the role of producer in The Silent Harbour?", "single", "The Silent Harbour"),
    ("To which fictional universe does Miriam Holt belong in?", "single", "Miriam Holt"),
    ("Graham Lowe was born in", "single", "Graham Lowe"),
    ("Which label was Sandra Okoye signed to?", "single", "Sandra Okoye"),
    ("What voice type does Ilse Brandt have?", "single", "Ilse Brandt"),
    ("In which year did Nokia release its first phone?", "single", "Nokia"),
    ("How tall is the Eiffel Tower?", "single", "Eiffel Tower"),
    ("When was Marie Curie awarded her second Nobel Prize?", "single", "Marie Curie"),
    ("What was the first novel that Haruki Murakami published?", "single", "Haruki Murakami"),
    ("Which instrument does Yo-Yo Ma play?", "single", "Yo-Yo Ma"),
    ("How many people live in Lagos?", "single", "Lagos"),
    ("What is the population of the capital of Kenya?", "multi", "Kenya"),
    ("How old is the founder of Spotify?", "multi", "Spotify"),
    ("What currency is used where Lionel Messi was born?", "multi", "Lionel Messi"),
    ("Which continent is the birthplace of Frida Kahlo on?", "multi", "Frida Kahlo"),
    ("What language do people speak in the country Keanu Reeves comes from?", "multi", "Keanu Reeves"),
    ("Who is the boss of the company that makes the PlayStation?", "multi", "PlayStation"),
    ("Name the spouse of the man who founded Microsoft.", "multi", "Microsoft"),
    ("The official language of the country where Shakira was born is", "multi", "Shakira"),
    ("Who is in charge of the government of the country whose capital is Hanoi?", "multi", "Hanoi"),
    ("Which university did the director of Rashomon go to?", "multi", "Rashomon"),
    ("Where is the company that developed Minecraft headquartered?", "multi", "Minecraft"),
    ("Who coaches the club Zinedine Zidane played for?", "multi", "Zinedine Zidane"),
    ("What is the capital city of the nation Tim Berners-Lee is a citizen of?", "multi", "Tim Berners-Lee"),
    ("In what country was the author of Dune born?", "multi", "Dune"),
    ("The spouse of the founder of IKEA was born in", "multi", "IKEA"),
    ("Who is the head of state where Amartya Sen holds citizenship?", "multi", "Amartya Sen"),
    ("Which religion does the wife of Nelson Mandela follow?", "multi", "Nelson Mandela"),
    ("What do they speak in the homeland of Wangari Maathai?", "multi", "Wangari Maathai"),
    ("Where did the person who directed Spirited Away go to university?", "multi", "Spirited Away"),
    ("Tell me who employs the spouse of Serena Williams.", "multi", "Serena Williams"),
    ("Who is the current leader of the country that Greta Thunberg is from?", "multi", "Greta Thunberg"),
    ("Who is the head coach of the team Simone Biles represents?", "multi", "Simone Biles"),
    ("Which city hosts the head office of the company Alan Turing worked for?", "multi", "Alan Turing"),
    ("Who heads the government of the state whose capital is Porto?", "multi", "Porto"),
    ("What's the nationality of the guy who created Linux?", "multi", "Linux"),
    ("Who founded the company whose CEO is Satya Nadella?", "multi", "Satya Nadella"),
    ("Who is the Prime Minister of the Republic of Ireland?", "single", "Republic of Ireland"),
    ("Who founded the Bank of Montreal?", "single", "Bank of Montreal"),
    ("What is the capital of the Republic of Ireland?", "single", "Republic of Ireland"),
    ("Where is the University of Cape Town located?", "single", "University of Cape Town"),
    ("Who wrote The Name of the Rose?", "single", "The Name of the Rose"),
    ("Who directed City of God?", "single", "City of God"),
    ("Which country is Trinity College Dublin in?", "single", "Trinity College Dublin"),
    ("What is the name of the river that flows through Krakow?", "single", "Krakow"),
    ("Which team did Pelé play for during most of his career?", "single", "Pelé"),
    ("Which company makes the Corolla?", "single", "Corolla"),
    ("What award did Chinua Achebe receive in 2007?", "single", "Chinua Achebe"),
    ("Who was the first person to walk on the Moon?", "single", "Moon"),
    ("What is the name of the team that Usain Bolt ran for at the Olympics?", "single", "Usain Bolt"),
    ("Which party does Jacinda Ardern belong to?", "single", "Jacinda Ardern"),
    ("Who voices the main character in Spirited Away?", "single", "Spirited Away"),
    ("What instrument did the composer of the Moonlight Sonata play?", "multi", "Moonlight Sonata"),
    ("Which city was the author of Beloved born in?", "multi", "Beloved"),
    ("Who is married to the CEO of Unilever?", "multi", "Unilever"),
    ("On which continent is the country where Rio de Janeiro lies?", "multi", "Rio de Janeiro"),
    ("What is the currency of the country where the headquarters of Samsung are?", "multi", "Samsung"),
    ("Who is the mother of the king of Norway?", "multi", "Norway"),
    ("Where did the founder of Lego die?", "multi", "Lego"),
    ("The head of state of the country Usain Bolt represents is", "multi", "Usain Bolt"),
    ("What is Pedro Paramo about?", "single", "Pedro Paramo"),
    ("Is Mongolia a landlocked country?", "single", "Mongolia"),
    ("Which city is the capital of the country where Daft Punk was formed?", "multi", "Daft Punk"),
    ("Who owns the team that Celtic plays against in the Old Firm?", "multi", "Celtic"),
    ("What is the official language of the country whose head of state is Harald V?", "multi", "Harald V"),
    ("Lena Meyer is a citizen of", "single", "Lena Meyer"),
    ("The mother tongue of Joe Ward is", "single", "Joe Ward"),
    ("Joe Ward's employer is", "single", "Joe Ward"),
    ("What university did Lena Meyer's father attend?", "multi", "Lena Meyer"),
    ("Lena Meyer's spouse works for", "multi", "Lena Meyer"),
]


def _cap(text: str) -> str:
    return text[:1].upper() + text[1:]


def _fill(template: str, inner: str) -> str:
    out = template.replace("{s}", inner)
    return _cap(out) if template.startswith("{s}") else out


def _types_of(rel: str) -> tuple[str, ...]:
    return R[rel]["subj"]


def build(seed: int = 7) -> list[dict]:
    rng = random.Random(seed)
    rows: list[dict] = []
    # single-hop: every phrasing of every relation, with two subjects of a fitting type
    for rid, r in R.items():
        for k, t in enumerate(r["single"]):
            for subj in rng.sample([s for ty in r["subj"] for s in SUBJECTS[ty]], 2):
                rows.append(dict(question=_fill(t, subj), label="single", subject=subj, relations=[rid],
                                 pattern=f"{rid}/single/{k}", source="grammar"))
    # two hops: an inner description (relation r1 of the subject) inside an outer question (r2)
    inner_rels = [rid for rid, r in R.items() if r.get("np")]
    pairs = [(r1, r2) for r1 in inner_rels for r2 in R
             if any(ty in _types_of(r2) for ty in FEEDS.get(R[r1]["obj"], ()))]
    for r1, r2 in pairs:
        for _ in range(2):
            subj = rng.choice([s for ty in R[r1]["subj"] for s in SUBJECTS[ty]])
            k1 = rng.randrange(len(R[r1]["np"]))
            k2 = rng.randrange(len(R[r2]["single"]))
            inner = R[r1]["np"][k1].replace("{s}", subj)
            rows.append(dict(question=_fill(R[r2]["single"][k2], inner), label="multi", subject=subj,
                             relations=[r1, r2], pattern=f"{r1}>{r2}/{k1}.{k2}", source="grammar"))
    # three hops: two nested descriptions
    triples = [(r1, r2, r3) for r1, r2 in pairs if R[r2].get("np") for r3 in R
               if any(ty in _types_of(r3) for ty in FEEDS.get(R[r2]["obj"], ()))]
    for r1, r2, r3 in rng.sample(triples, min(90, len(triples))):
        subj = rng.choice([s for ty in R[r1]["subj"] for s in SUBJECTS[ty]])
        k1, k2, k3 = (rng.randrange(len(R[r]["np" if i < 2 else "single"])) for i, r in enumerate((r1, r2, r3)))
        inner = R[r2]["np"][k2].replace("{s}", R[r1]["np"][k1].replace("{s}", subj))
        rows.append(dict(question=_fill(R[r3]["single"][k3], inner), label="multi", subject=subj,
                         relations=[r1, r2, r3], pattern=f"{r1}>{r2}>{r3}/{k1}.{k2}.{k3}", source="grammar"))
    for q, label, subj in HAND:
        rows.append(dict(question=q, label=label, subject=subj, relations=[], pattern="hand", source="hand"))
    seen: set[str] = set()
    out = []
    for row in rows:
        if row["question"] not in seen:
            seen.add(row["question"])
            out.append(row)
    for i, row in enumerate(out):
        row["id"] = f"q{i:04d}"
    return out


def main() -> None:
    rows = build()
    with OUT.open("w", encoding="utf-8") as fh:
        for row in rows:
            fh.write(json.dumps(row, ensure_ascii=False) + "\n")
    n_multi = sum(r["label"] == "multi" for r in rows)
    print(f"{len(rows)} questions ({n_multi} multi-hop, {len(rows) - n_multi} single-hop) -> {OUT}")


if __name__ == "__main__":
    main()
