"""LIMIT-style stress test sets: people who like things, "Who likes X?", two relevant documents per query.

After the LIMIT dataset of "On the Theoretical Limitations of Embedding-Based Retrieval" (Weller, Boratko,
Naim and Lee, 2025; https://github.com/google-deepmind/limit; data CC-BY-4.0 and code Apache-2.0, Copyright
2025 Google LLC). The construction follows its generator, ``code/generate_limit_dataset.ipynb``:

- the *core* is the smallest number of documents c with C(c, 2) >= Q, and query i's two relevant documents
  are the i-th pair of ``itertools.combinations(range(c), 2)`` (the notebook's dense qrel matrix), so the
  first core document is in c - 1 pairs and the last ones in fewer (LIMIT-small: 37 to 45 pairs);
- each query gets its own attribute from the shuffled pool, and both documents of its pair like it;
- every document is then filled up to a fixed number of attributes (the notebook's ``min_items=45``) from
  the pool less the query attributes; documents outside the core (distractors) like fillers only;
- a document reads ``"<Name> likes A, B, ... and Z."`` and its id is the name; a query ``"Who likes X?"``.

So each query attribute is liked by exactly its two documents in the whole corpus: a lexical match solves
the set, while one vector per document has to rank each of the Q pairs of a small core first. The first and
last names and the attribute pool below are zsr's own (the notebook downloads name lists and ships its own,
longer pool); ``--attributes FILE`` supplies another pool, one attribute per line.
"""

from __future__ import annotations

import json
import logging
import random
import shutil
import tempfile
from collections import Counter
from dataclasses import dataclass
from itertools import combinations, islice
from math import comb
from pathlib import Path

logger = logging.getLogger(__name__)

PER_DOC = 45  # attributes per document in the notebook (min_items) and in LIMIT-small
SEED = 42  # the notebook's
BEIR_FILES = {"corpus.jsonl", "queries.jsonl", "qrels"}

FIRST_NAMES = """
Aaron Abigail Ada Adele Adrian Agnes Aidan Alan Albert Alec Alice Alma Alvin Amara Amelia Amos Andrea Angus
Anika Annette Ansel Arlo Arthur Astrid Aubrey Audrey August Aurora Barbara Basil Beatrice Benedict Bernard
Bettina Bianca Blair Boris Brenda Bruno Calvin Camille Carla Carmen Casimir Cecil Celeste Cedric Chandra
Clara Claude Clement Colette Cora Cornelius Cyrus Dalia Damian Daphne Darius Delia Dennis Desmond Dina Dora
Dorian Douglas Edgar Edith Edmund Elena Elias Eliza Elmer Eloise Emil Enid Erin Ernest Esme Esther Ethan Eva
Evelyn Ezra Fabian Faye Felix Fern Fiona Floyd Frances Frida Gareth Gemma Georgia Gerald Gideon Gilbert
Gloria Gordon Greta Gustav Hannah Harold Harriet Hazel Hector Helena Herbert Hilda Homer Hugo Ida Imogen
Ingrid Ira Irene Isaac Isla Ivan Ivy Jasper Jerome Joan Jonah Josephine Jude Julian Juno Karl Katya Keira
Kenji Lars Laurel Leander Leila Leon Levi Lila Linus Lionel Lorna Louisa Lucian Lydia Mabel Magnus Maeve
Malcolm Marcel Margot Marius Martha Matilda Maxine Meredith Milo Mina Miriam Monty Morgan Murray Nadia Naomi
Nell Nestor Nina Noel Nora Norman Octavia Odette Olga Oliver Opal Orson Oscar Otis Pamela Pascal Pearl Percy
Petra Philippa Piers Pia Quentin Quinn Rafael Ramona Reuben Rhea Rocco Roland Rosa Rowan Rufus Ruth Sabine
Sadie Samson Selma Serena Silas Simone Sofia Solomon Stella Stellan Sybil Tabitha Tamsin Thea Theo Tobias
Ulla Ulric Una Ursula Valentin Vera Vernon Victor Viola Vivian Wade Walter Wanda Wendell Wilhelmina Willa
Winston Xavier Xenia Yara Yusuf Yvette Zelda Zeno Zora Zuzana Anton Bettany Caspar Delphine Emrys Farida
Hamish Ines Joaquin Kasimir Liesel Mathis Noor Orla Priya Ravi Saoirse Tarquin Umberto Vesna Wilbur Yasmin
Zachary Leopold Rosalind
"""

LAST_NAMES = """
Abbott Acosta Ainsley Albrecht Aldridge Alvarado Ambrose Ashdown Atwood Avery Babcock Bainbridge Baxter
Beaumont Beckett Bellamy Benson Berglund Birch Blackwood Blake Boateng Bowen Bramley Brennan Brooks Burgess
Calloway Campos Carlisle Carrington Castillo Caulfield Chadwick Chandler Chatterjee Clarke Colby Conrad
Corbett Crane Crawford Dalton Darrow Davenport Delacroix Dempsey Devlin Dobson Donovan Drummond Duarte
Dunmore Eastman Eckhart Ellery Ellison Emerson Esposito Everett Fairbanks Falk Farrow Fenwick Ferreira Finch
Fitzroy Fleming Forsythe Fontaine Foster Fowler Galloway Garnett Gaskell Gideon Gilmore Goodwin Granger
Greaves Gutierrez Hale Halvorsen Hammond Harcourt Hargrove Hartley Hastings Hawthorne Hayward Hendricks
Holloway Hornby Huxley Ingram Irving Iverson Jablonski Jansen Jarvis Jennings Kaminski Keating Kendrick
Kessler Kimura Kingsley Kirby Knox Kowalski Lachance Lambert Langley Larkin Lawson Leclerc Lindqvist
Lockwood Lombardi Lovell Lowry Lundgren Macaulay Maddox Mallory Marlowe Mercer Merriman Metcalf Moreau
Morrow Mortimer Nakamura Navarro Nesbitt Newcombe Nightingale Norwood Novak Oakley Okafor Oliveira Orwell
Osborne Pacheco Padilla Pemberton Pendleton Penrose Petrov Pickering Pollard Prescott Quigley Quintero
Radcliffe Ramsey Rasmussen Redfern Renwick Ridley Rinaldi Rivers Rockwell Romero Rowland Rutherford Salazar
Sandoval Sato Saunders Sinclair Slater Soderberg Sorensen Spalding Stanhope Sterling Stratton Sutherland
Swann Takahashi Talbot Tanaka Thackeray Thorne Tolliver Townsend Trevino Underhill Upton Valdez Vance
Vasquez Vaughan Villanueva Wainwright Waller Warrick Webber Wentworth Whitaker Whitfield Wilkes Winslow
Wolfe Woodward Wren Yamamoto Yardley Yates Ziegler Zimmerman Abernathy Bancroft Castellano Dreyfus Eriksen
Fairweather Gallagher Holmberg Ishikawa Jovanovic Kavanagh Lindgren Montague Nordstrom Ogilvie Pryce Quayle
Rhodes Strand Trelawney Ulbrich Vickers Westbrook Aguilar Brandt Cortez Dunleavy Escobar Faraday Goldberg
Hendry Ivanova Jorgensen Kruger Lyons Mendoza Nielsen Ortega Pearce Quiroga Reyes Schubert Torres Ueda
Volkov Whitmore Yilmaz Zamora
"""

# One attribute per entry, ";"-separated: people, things and pastimes one can like, each a distinct phrase.
ATTRIBUTES = """
Apricots; Avocados; Blueberries; Cranberries; Figs; Gooseberries; Grapes; Kumquats; Lemons; Mangoes;
Nectarines; Olives; Papayas; Pears; Pineapples; Plums; Quinces; Rhubarb; Tangerines; Watermelons;
Artichokes; Asparagus; Beetroot; Broccoli; Brussels Sprouts; Carrots; Celery; Chard; Chickpeas; Edamame;
Fennel; Kohlrabi; Leeks; Lentils; Parsnips; Pumpkins; Radishes; Shallots; Turnips; Watercress; Almonds;
Cashews; Chestnuts; Hazelnuts; Macadamia Nuts; Peanuts; Pecans; Pistachios; Walnuts; Sunflower Seeds;
Bagels; Brioche; Cornbread; Croissants; Dumplings; Flatbread; Focaccia; Pretzels; Scones; Waffles; Pancakes;
Porridge; Granola; Muesli; Omelettes; Risotto; Paella; Ramen; Sushi; Tacos; Burritos; Enchiladas; Gnocchi;
Lasagna; Ravioli; Goulash; Moussaka; Falafel; Hummus; Tabbouleh; Samosas; Dim Sum; Pad Thai; Pho; Kimchi;
Miso Soup; Gazpacho; Minestrone; Chowder; Bouillabaisse; Cheddar; Brie; Gouda; Feta; Mozzarella; Parmesan;
Roquefort; Halloumi; Ricotta; Camembert; Chocolate Cake; Cheesecake; Tiramisu; Baklava; Churros; Eclairs;
Macarons; Meringues; Profiteroles; Strudel; Fudge; Marzipan; Nougat; Toffee; Caramel; Marshmallows;
Gingerbread; Shortbread; Brownies; Cupcakes; Espresso; Cappuccino; Green Tea; Chamomile Tea; Hot Chocolate;
Lemonade; Kombucha; Ginger Ale; Cider; Root Beer; Smoothies; Milkshakes; Iced Coffee; Mint Tea; Matcha;
Oolong Tea; Yerba Mate; Horchata; Cinnamon; Nutmeg; Saffron; Paprika; Cardamom; Cumin; Vanilla; Wasabi;
Horseradish; Tarragon; Aardvarks; Albatrosses; Antelopes; Armadillos; Axolotls; Baboons; Badgers;
Barracudas; Beavers; Bison; Bobcats; Buffaloes; Camels; Capybaras; Caribou; Chameleons; Cheetahs;
Chinchillas; Cockatoos; Condors; Cormorants; Coyotes; Crabs; Dingoes; Dolphins; Donkeys; Dormice; Eels;
Egrets; Falcons; Ferrets; Flamingos; Gazelles; Geckos; Gibbons; Giraffes; Gorillas; Hares; Hedgehogs;
Herons; Hippos; Hyenas; Ibises; Iguanas; Jackals; Jaguars; Jellyfish; Kestrels; Kiwis; Koalas; Lemurs;
Leopards; Lynxes; Magpies; Manatees; Marmots; Meerkats; Mongooses; Moose; Narwhals; Newts; Ocelots;
Octopuses; Opossums; Orcas; Ostriches; Otters; Owls; Pandas; Pangolins; Pelicans; Penguins; Platypuses;
Porcupines; Puffins; Quails; Raccoons; Reindeer; Salamanders; Seahorses; Sloths; Squirrels; Starlings;
Storks; Tapirs; Toucans; Turtles; Vultures; Walruses; Wombats; Accordions; Bagpipes; Banjos; Bassoons;
Cellos; Clarinets; Didgeridoos; Flutes; Harmonicas; Harps; Harpsichords; Mandolins; Marimbas; Oboes; Pianos;
Saxophones; Sitars; Trombones; Trumpets; Tubas; Ukuleles; Violins; Xylophones; Bongo Drums; Tambourines;
Synthesizers; Church Organs; Steel Drums; Jazz; Blues; Opera; Reggae; Bluegrass; Flamenco; Salsa Music;
Punk Rock; Heavy Metal; Hip Hop; Country Music; Gospel Music; Baroque Music; Techno; Folk Songs;
Sea Shanties; Barbershop Singing; Madrigals; Archery; Badminton; Baseball; Basketball; Bowling; Boxing;
Canoeing; Cricket; Croquet; Curling; Cycling; Darts; Diving; Fencing; Figure Skating; Golf; Gymnastics;
Handball; Hockey; Judo; Kayaking; Lacrosse; Marathons; Netball; Polo; Rowing; Rugby; Sailing; Skiing;
Snowboarding; Squash; Surfing; Swimming; Table Tennis; Tennis; Triathlons; Volleyball; Water Polo;
Wrestling; Yoga; Pilates; Rock Climbing; Hiking; Orienteering; Parkour; Skateboarding; Kitesurfing;
Paragliding; Bouldering; Chess; Checkers; Backgammon; Mahjong; Dominoes; Crossword Puzzles; Sudoku;
Jigsaw Puzzles; Poker; Bingo; Knitting; Crochet; Embroidery; Quilting; Pottery; Woodworking; Calligraphy;
Origami; Beekeeping; Birdwatching; Gardening; Stargazing; Fishing; Camping; Geocaching; Scrapbooking;
Baking; Brewing; Candle Making; Soap Carving; Stamp Collecting; Coin Collecting; Metal Detecting;
Kite Flying; Model Trains; Puppetry; Juggling; Magic Tricks; Ballet; Tango; Waltz; Tap Dancing;
Swing Dancing; Line Dancing; Breakdancing; Square Dancing; Belly Dancing; Poetry; Mystery Novels;
Science Fiction; Fairy Tales; Comic Books; Graphic Novels; Biographies; Haiku; Westerns; Documentaries;
Silent Films; Musicals; Sitcoms; Cartoons; Film Noir; Horror Films; Game Shows; Astronomy; Botany;
Chemistry; Geology; Linguistics; Meteorology; Oceanography; Philosophy; Archaeology; Anthropology;
Cryptography; Economics; Genetics; Mycology; Entomology; Ornithology; Paleontology; Topology; Glaciers;
Volcanoes; Waterfalls; Canyons; Deserts; Fjords; Geysers; Lagoons; Marshes; Meadows; Moors; Oases; Prairies;
Rainforests; Reefs; Savannas; Tundra; Valleys; Dunes; Archipelagos; Thunderstorms; Fog; Snowflakes;
Rainbows; Sunsets; Sunrises; Auroras; Eclipses; Comets; Meteor Showers; Lighthouses; Windmills; Castles;
Cathedrals; Bridges; Skyscrapers; Pagodas; Pyramids; Aqueducts; Observatories; Bicycles; Motorcycles;
Sailboats; Hot Air Balloons; Steam Trains; Trams; Gondolas; Submarines; Zeppelins; Typewriters;
Fountain Pens; Sundials; Hourglasses; Telescopes; Microscopes; Compasses; Barometers; Abacuses;
Kaleidoscopes; Music Boxes; Snow Globes; Cuckoo Clocks; Lava Lamps; Record Players; Polaroid Cameras;
Teapots; Umbrellas; Lanterns; Hammocks; Quilts; Rocking Chairs; Wind Chimes; Candles; Mosaics; Tapestries;
Sapphires; Rubies; Emeralds; Opals; Amethysts; Topaz; Garnets; Jade; Pearls; Turquoise; Orchids; Tulips;
Daffodils; Lilacs; Peonies; Magnolias; Camellias; Dahlias; Marigolds; Sunflowers; Lavender; Heather;
Bluebells; Foxgloves; Snapdragons; Poppies; Irises; Lotus Flowers; Wisteria; Honeysuckle; Oak Trees;
Maple Trees; Willow Trees; Birch Trees; Redwoods; Sequoias; Baobabs; Cedars; Cypresses; Palm Trees; Cacti;
Ferns; Mosses; Bonsai; Succulents; Bamboo; Ivy; Venus Flytraps; Water Lilies; Mushrooms; Architects;
Astronauts; Carpenters; Chefs; Detectives; Firefighters; Gardeners; Librarians; Lifeguards; Midwives;
Pilots; Plumbers; Poets; Sculptors; Surgeons; Tailors; Teachers; Veterinarians; Zookeepers; Pirates;
Knights; Wizards; Dragons; Unicorns; Mermaids; Robots; Vampires; Ghosts; Dinosaurs; Road Trips; Picnics;
Bonfires; Fireworks; Carnivals; Parades; Flea Markets; Museums; Aquariums; Planetariums; Libraries;
Bookshops; Botanical Gardens; Vineyards; Orchards; Farmers Markets; Thrift Stores; Arcades; Roller Coasters;
Ferris Wheels; Bumper Cars; Escape Rooms; Karaoke; Trivia Nights; Pub Quizzes; Open Mics; Podcasts;
Audiobooks; Handwritten Letters; Postcards; Vinyl Records; Cassette Tapes; Video Games; Pinball;
Board Games; Card Tricks; Tabletop Roleplaying; Lego; Yo-yos; Frisbees; Kites; Silence; Solitude; Nostalgia;
Punctuality; Symmetry; Minimalism; Curiosity; Kindness; Honesty; Adventure; Spring; Summer; Autumn; Winter;
Mornings; Midnight; Weekends; Holidays; Birthdays; Full Moons
"""


def _entries(block: str) -> list[str]:
    return [a.strip() for a in block.split(";") if a.strip()]


class InvariantError(AssertionError):
    """A generated set broke a LIMIT invariant: a bug in the generator, never the user's input."""


@dataclass(frozen=True)
class LimitSet:
    """A generated set: who likes what, each query's attribute and its two relevant documents."""

    likes: dict[str, tuple[str, ...]]  # document id (a name) -> its attributes, in corpus order
    core: tuple[str, ...]  # the core documents, in pair order (the first is in c - 1 pairs)
    queries: dict[str, str]  # query id -> the attribute it asks about
    qrels: dict[str, tuple[str, str]]  # query id -> its two relevant documents
    per_doc: int
    pool: tuple[str, ...]

    def text(self, doc_id: str) -> str:
        """``"<Name> likes A, B and C."`` as the notebook writes it."""
        *head, last = self.likes[doc_id]
        return f"{doc_id} likes {', '.join(head)} and {last}." if head else f"{doc_id} likes {last}."


@dataclass(frozen=True)
class LimitReport:
    """What ``write_limit`` wrote."""

    out: str
    docs: int
    core: int
    distractors: int
    queries: int
    qrels: int
    per_doc: int
    pool: int
    attributes: str  # "built-in" or the file's path
    min_pairs: int  # pairs the least and the most loaded core document is in
    max_pairs: int
    seed: int


def core_size(queries: int) -> int:
    """The smallest c with C(c, 2) >= ``queries`` (46 for 1,000)."""
    c = 2
    while comb(c, 2) < queries:
        c += 1
    return c


def core_pairs(queries: int) -> list[tuple[int, int]]:
    """The notebook's dense qrel matrix: the first ``queries`` pairs of the core in lexicographic order."""
    return list(islice(combinations(range(core_size(queries)), 2), queries))


def read_attributes(path: Path) -> list[str]:
    """An attribute pool from a file, one attribute per line (blank lines skipped).

    Raises:
        ValueError: naming the file and lines of a repeated attribute (compared case-insensitively, since a
            repeat would make one query attribute liked by more documents than its two).
    """
    return _checked_pool(path.read_text(encoding="utf-8").splitlines(), str(path))


def _checked_pool(lines: list[str], source: str) -> list[str]:
    seen: dict[str, int] = {}
    pool = []
    for number, line in enumerate(lines, 1):
        attribute = " ".join(line.split())
        if not attribute:
            continue
        if attribute.casefold() in seen:
            raise ValueError(
                f"{source}:{number}: {attribute!r} repeats line {seen[attribute.casefold()]}; "
                "each attribute must be listed once"
            )
        seen[attribute.casefold()] = number
        pool.append(attribute)
    return pool


def builtin_attributes() -> list[str]:
    """The built-in pool, zsr's own 630 attributes: enough for 585 queries at 45 per document."""
    return _checked_pool(_entries(ATTRIBUTES), "the built-in attribute pool")


def generate_limit(
    docs: int,
    queries: int,
    attributes: list[str] | None = None,
    per_doc: int | None = None,
    seed: int = SEED,
    source: str = "the built-in attribute pool",
) -> LimitSet:
    """Build a LIMIT-style set in memory, deterministic for ``seed``, and check its invariants.

    ``per_doc`` defaults to the notebook's 45, or c - 1 when the core is larger (its first document is in
    c - 1 pairs, so it must like that many query attributes).

    Raises:
        ValueError: a size that cannot be built, naming the option that fixes it.
    """
    pool = builtin_attributes() if attributes is None else list(attributes)
    if queries < 1 or docs < 2:
        raise ValueError(f"need at least 1 query and 2 documents (got --queries {queries}, --docs {docs})")
    pairs = core_pairs(queries)
    c = core_size(queries)
    loads = Counter(i for pair in pairs for i in pair)
    most, least = max(loads.values()), min(loads.values())
    if docs < c:
        raise ValueError(
            f"{queries} queries need a core of {c} documents (the smallest c with C(c, 2) >= {queries}) but "
            f"--docs is {docs}: ask --docs {c} or more, or at most {comb(docs, 2)} --queries"
        )
    k = max(PER_DOC, most) if per_doc is None else per_doc
    if k < most:
        raise ValueError(
            f"--per-doc {k} is too small: with {queries} queries the first of the {c} core documents is in "
            f"{most} pairs and must like {most} query attributes; ask --per-doc {most} or more, or fewer "
            "--queries"
        )
    fillers_needed, neediest = (
        (k, "each distractor") if docs > c else (k - least, "the least loaded document")
    )
    if len(pool) < queries + fillers_needed:
        raise ValueError(
            f"{source} holds {len(pool)} attributes, but {queries} queries with {k} attributes per document "
            f"need {queries + fillers_needed} ({queries} for the queries, {fillers_needed} distinct fillers "
            f"for {neediest}); pass --attributes FILE with {queries + fillers_needed} or more "
            "lines, or ask fewer --queries or a smaller --per-doc"
        )
    rng = random.Random(seed)
    shuffled = list(pool)
    rng.shuffle(shuffled)
    asked, fillers = shuffled[:queries], shuffled[queries:]
    names = _names(docs, rng)
    liked: list[list[str]] = [[] for _ in range(docs)]
    for (a, b), attribute in zip(pairs, asked, strict=True):
        liked[a].append(attribute)
        liked[b].append(attribute)
    for attrs in liked:
        attrs += rng.sample(fillers, k - len(attrs))
        rng.shuffle(attrs)
    ids = [f"query_{i}" for i in range(queries)]
    limit = LimitSet(
        likes={name: tuple(attrs) for name, attrs in zip(names, liked, strict=True)},
        core=tuple(names[:c]),
        queries=dict(zip(ids, asked, strict=True)),
        qrels={q: (names[a], names[b]) for q, (a, b) in zip(ids, pairs, strict=True)},
        per_doc=k,
        pool=tuple(pool),
    )
    check_limit(limit, docs, queries)
    return limit


def _names(n: int, rng: random.Random) -> list[str]:
    """``n`` distinct "First Last" names (the notebook pairs random first names and surnames)."""
    first, last = list(dict.fromkeys(FIRST_NAMES.split())), list(dict.fromkeys(LAST_NAMES.split()))
    if n > len(first) * len(last):
        raise ValueError(
            f"--docs {n} is more than the {len(first) * len(last)} names zsr can make; ask fewer --docs"
        )
    return [
        f"{first[i // len(last)]} {last[i % len(last)]}" for i in rng.sample(range(len(first) * len(last)), n)
    ]


def check_limit(limit: LimitSet, docs: int, queries: int) -> None:
    """Hold a generated set to LIMIT's invariants (see the module docstring).

    Raises:
        InvariantError: naming the first broken invariant.
    """

    def fail(message: str) -> None:
        raise InvariantError(message)

    if len(limit.likes) != docs or len(limit.queries) != queries or set(limit.qrels) != set(limit.queries):
        fail(
            f"asked {docs} documents and {queries} queries, made {len(limit.likes)} and {len(limit.queries)}"
        )
    c = len(limit.core)
    if not comb(c, 2) >= queries > comb(c - 1, 2):
        fail(f"a core of {c} is not the smallest with C(c, 2) >= {queries}")
    if len(set(limit.core)) != c or not set(limit.core) <= set(limit.likes):
        fail("the core documents are not distinct documents of the corpus")
    asked = set(limit.queries.values())
    if len(asked) != queries:
        fail("two queries ask about the same attribute")
    pool = set(limit.pool)
    for doc, attrs in limit.likes.items():
        if len(attrs) != limit.per_doc or len(set(attrs)) != len(attrs):
            fail(f"{doc!r} likes {len(set(attrs))} distinct attributes in {len(attrs)}, not {limit.per_doc}")
        if not set(attrs) <= pool:
            fail(f"{doc!r} likes {sorted(set(attrs) - pool)[0]!r}, which is not in the attribute pool")
        if doc not in limit.core and asked & set(attrs):
            fail(f"distractor {doc!r} likes the query attribute {sorted(asked & set(attrs))[0]!r}")
    likers: dict[str, set[str]] = {a: set() for a in asked}
    for doc, attrs in limit.likes.items():
        for attribute in asked.intersection(attrs):
            likers[attribute].add(doc)
    core = set(limit.core)
    seen: set[frozenset[str]] = set()
    for query, attribute in limit.queries.items():
        pair = frozenset(limit.qrels[query])
        if len(pair) != 2 or not pair <= core:
            fail(f"{query}'s relevant documents {sorted(pair)} are not two core documents")
        if pair in seen:
            fail(f"{query} repeats the pair {sorted(pair)}")
        seen.add(pair)
        if likers[attribute] != pair:
            fail(f"{query} ({attribute!r}) is liked by {sorted(likers[attribute])}, not by {sorted(pair)}")


def write_limit(
    out: Path,
    docs: int,
    queries: int,
    attributes: Path | None = None,
    per_doc: int | None = None,
    seed: int = SEED,
    replace: bool = False,
) -> LimitReport:
    """Generate a LIMIT-style set and write it to ``out`` as a BEIR folder.

    The folder appears whole or not at all (written beside it, then renamed into place). An ``out`` that
    holds anything is refused unless ``replace``, and even then only when it holds a BEIR set and nothing
    else, so a mistyped path never deletes someone's files.

    Raises:
        ValueError: a size that cannot be built, a bad attribute file or an ``out`` that is in the way.
        FileNotFoundError: no attribute file at ``attributes``.
    """
    present = sorted(p.name for p in out.iterdir()) if out.is_dir() else []
    if out.exists() and not out.is_dir():
        raise ValueError(f"{out} is a file; name a new or empty folder")
    if present and not replace:
        listed = ", ".join(present[:3]) + (", ..." if len(present) > 3 else "")
        raise ValueError(f"{out} is not empty ({listed}); name a new folder or pass --replace")
    if present and not set(present) <= BEIR_FILES:
        others = sorted(set(present) - BEIR_FILES)
        raise ValueError(
            f"{out} holds {', '.join(others[:3])}, not only a BEIR set; --replace refuses to delete it"
        )
    pool = None if attributes is None else read_attributes(attributes)
    source = "the built-in attribute pool" if attributes is None else str(attributes)
    limit = generate_limit(docs, queries, pool, per_doc, seed, source)
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        _write_beir(limit, staging)
        if out.exists():
            shutil.rmtree(out)
        staging.rename(out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    loads = Counter(d for pair in limit.qrels.values() for d in pair)
    logger.info("wrote LIMIT-style set %s: %d documents, %d queries", out, docs, queries)
    return LimitReport(
        out=str(out),
        docs=docs,
        core=len(limit.core),
        distractors=docs - len(limit.core),
        queries=queries,
        qrels=2 * queries,
        per_doc=limit.per_doc,
        pool=len(limit.pool),
        attributes=source if attributes is not None else "built-in",
        min_pairs=min(loads.values()),
        max_pairs=max(loads.values()),
        seed=seed,
    )


def _write_beir(limit: LimitSet, folder: Path) -> None:
    with (folder / "corpus.jsonl").open("w", encoding="utf-8") as f:
        for doc in limit.likes:
            f.write(json.dumps({"_id": doc, "title": "", "text": limit.text(doc)}, ensure_ascii=False) + "\n")
    with (folder / "queries.jsonl").open("w", encoding="utf-8") as f:
        for query, attribute in limit.queries.items():
            f.write(json.dumps({"_id": query, "text": f"Who likes {attribute}?"}, ensure_ascii=False) + "\n")
    (folder / "qrels").mkdir()
    with (folder / "qrels" / "test.tsv").open("w", encoding="utf-8") as f:
        f.write("query-id\tcorpus-id\tscore\n")
        for query, pair in limit.qrels.items():
            f.writelines(f"{query}\t{doc}\t1\n" for doc in pair)
