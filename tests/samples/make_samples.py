"""Write the small made-up data samples beside this script (``python tests/samples/make_samples.py``).

The rows are invented from templates (no real corpus text): they only have the on-disk formats of
GLUE (SST-2, MRPC, STS-B TSV files) and CoNLL-2003 (``token<TAB>tag``, blank line between sentences),
so that tests of the loaders, tokenisation and the training loop run on a fresh clone. ``reviews/`` and
``pairs/`` are a data set of one's own (docs/data.md): product reviews with three string classes, as
CSV files per split and as one JSON Lines file with a split field, and sentence pairs with a similarity
score as TSV files. Tests that need
the real data use ``data_helpers.shared_data`` instead. The output is deterministic; rerunning this
script rewrites the same files.
"""

import random
from pathlib import Path

HERE = Path(__file__).resolve().parent

# ---- GLUE -------------------------------------------------------------------------------------------
GOOD = ["a warm , funny", "an inventive", "a quietly moving", "a sharp and tender", "a gorgeous",
        "a clever , big-hearted", "an honest", "a tightly plotted"]
BAD = ["a tedious", "a clumsy , overlong", "a hollow", "a muddled", "an instantly forgettable",
       "a shrill and lifeless", "a lazy", "a joyless"]
THINGS = ["film", "comedy", "thriller", "drama about two sisters", "road movie", "musical",
          "debut feature", "ghost story"]
ENDS = ["", " that never finds its footing", " with a great final act", " from start to finish",
        " , even at two hours", " about growing up", " that earns its ending"]


def sst2_rows(rng, n):
    rows = ["sentence\tlabel"]
    for _ in range(n):
        label = rng.randint(0, 1)
        words = rng.choice(GOOD if label else BAD)
        rows.append(f"{words} {rng.choice(THINGS)}{rng.choice(ENDS)} .\t{label}")
    return rows


PEOPLE = ["Mara Quillon", "the mayor", "Dr. Oskar Pell", "the committee", "Tavi Renn", "a spokesman"]
VERBS = [("said", "stated"), ("announced", "declared"), ("denied", "rejected"), ("reported", "said")]
OBJECTS = ["the bridge would reopen on Monday", 'the plan was "not negotiable"',
           "sales rose 4.5 percent in May", "the talks had stalled", "the harbour would be dredged",
           "prices at Velmont fell to $12.40"]


def mrpc_rows(rng, n, first_id):
    rows = ["Quality\t#1 ID\t#2 ID\t#1 String\t#2 String"]
    for i in range(n):
        who, (verb, synonym), what = rng.choice(PEOPLE), rng.choice(VERBS), rng.choice(OBJECTS)
        a = f"{who[0].upper() + who[1:]} {verb} that {what}."
        if rng.random() < 0.5:  # a paraphrase
            label, b = 1, f"{what[0].upper() + what[1:]}, {who} {synonym}."
        else:
            label, b = 0, f"{who[0].upper() + who[1:]} {verb} that {rng.choice(OBJECTS)} last year."
        rows.append(f"{label}\t{first_id + 2 * i}\t{first_id + 2 * i + 1}\t{a}\t{b}")
    return rows


SUBJECTS = ["A man", "A woman", "A child", "A dog", "A cat", "An old man"]
ACTIONS = ["is playing a guitar", "is slicing an onion", "is riding a bike", "is swimming",
           "is reading a book", "is climbing a wall"]


def stsb_rows(rng, n):
    rows = ["index\tgenre\tfilename\tyear\told_index\tsource1\tsource2\tsentence1\tsentence2\tscore"]
    for i in range(n):
        s, a = rng.choice(SUBJECTS), rng.choice(ACTIONS)
        kind = rng.randrange(3)
        if kind == 0:
            b, score = f"{s} {a}.", 5.0
        elif kind == 1:
            b, score = f"{rng.choice(SUBJECTS)} {a}.", round(rng.uniform(2.0, 4.2), 1)
        else:
            b, score = f"{rng.choice(SUBJECTS)} {rng.choice(ACTIONS)}.", round(rng.uniform(0.0, 1.8), 1)
        rows.append(f"{i}\tmain-captions\tMSRvid\t2012test\t{i + 1:04d}\tnone\tnone\t{s} {a}.\t{b}\t{score:.3f}")
    return rows


# ---- CoNLL-2003 -------------------------------------------------------------------------------------
# Invented names, several of them long enough to split into many word pieces.
PER = [["Oskar", "Vandermeulen"], ["Mara", "Quillonetti"], ["Tavi"], ["Jorund", "Haskelberg"]]
ORG = [["Velmont", "Rail"], ["Brundle", "Athletic"], ["Kzarn", "Bank"], ["Ostrava", "Harbour", "Board"]]
LOC = [["Kzarnovia"], ["Lake", "Ulmbridge"], ["Port", "Sallow"], ["Dravenholt"]]
MISC = [["Kzarnovian"], ["Northern", "Cup"], ["Velmontese"]]
TEMPLATES = [
    ["{PER}", "said", "on", "Tuesday", "that", "{ORG}", "would", "open", "an", "office", "in", "{LOC}", "."],
    ["{ORG}", "beat", "{ORG}", "2", "-", "1", "in", "the", "{MISC}", "final", "."],
    ["{LOC}", "1996-09-14"],
    ["The", "{MISC}", "government", "named", "{PER}", "as", "envoy", "to", "{LOC}", "."],
    ["Shares", "in", "{ORG}", "fell", "3.5", "percent", "."],
    ["{PER}", "(", "{LOC}", ")", "71", "68", "139"],
]


def conll_sentences(rng, n):
    pools = {"PER": PER, "ORG": ORG, "LOC": LOC, "MISC": MISC}
    # a first sentence of common words, one word piece each (truncation tests cut it)
    lines = ["The\tO", "Northern\tB-MISC", "Cup\tI-MISC", "starts\tO", "in\tO", "May\tO", ".\tO", ""]
    for _ in range(n - 1):
        for slot in rng.choice(TEMPLATES):
            if slot.startswith("{"):
                kind = slot[1:-1]
                for j, word in enumerate(rng.choice(pools[kind])):
                    lines.append(f"{word}\t{'B' if j == 0 else 'I'}-{kind}")
            else:
                lines.append(f"{slot}\tO")
        lines.append("")
    return lines


# ---- A data set of one's own: reviews (3 classes) and sentence pairs (scores) ------------------------
PRODUCTS = ["kettle", "desk lamp", "rain jacket", "coffee grinder", "backpack", "phone case", "blender",
            "pair of boots", "toaster", "bike light"]
OPINIONS = {
    "positive": ["works perfectly", "is sturdy and well made", "exceeded what I hoped for", "is a joy to use",
                 "was worth every penny", 'is, honestly, the "best" buy this year'],
    "negative": ["broke after a week", "feels cheap and flimsy", "stopped working, twice", "was a waste of money",
                 "arrived damaged", 'is "waterproof" only on the box'],
    "neutral": ["does the job", "is about what you would expect", "is fine, nothing special", "is okay for the price",
                "works, mostly", "is average in every way"],
}
TAILS = ["", " and delivery was quick", ", I would say", " after a month of use", " for daily use", " overall"]


def review_rows(rng, n):
    """(review, label) rows: the label is the opinion's class."""
    rows = []
    for _ in range(n):
        label = rng.choice(sorted(OPINIONS))
        rows.append((f"The {rng.choice(PRODUCTS)} {rng.choice(OPINIONS[label])}{rng.choice(TAILS)}.", label))
    return rows


def csv_lines(header, rows):
    import csv
    import io

    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    return out.getvalue().splitlines()


def pair_rows(rng, n):
    """(sentence1, sentence2, score in [0, 5]) rows: the same action scores high, another one low."""
    rows = []
    for _ in range(n):
        s, a = rng.choice(SUBJECTS), rng.choice(ACTIONS)
        kind = rng.randrange(3)
        if kind == 0:
            b, score = f"{s} {a}.", round(rng.uniform(4.4, 5.0), 2)
        elif kind == 1:
            b, score = f"{rng.choice(SUBJECTS)} {a}.", round(rng.uniform(2.0, 4.0), 2)
        else:
            b, score = f"{s} {rng.choice([x for x in ACTIONS if x != a])}.", round(rng.uniform(0.0, 1.6), 2)
        rows.append(f"{s} {a}.\t{b}\t{score}")
    return rows


def write_own_data_sets() -> None:
    import json

    rng = random.Random(18)  # a stream of its own: the GLUE and CoNLL samples above stay as they were
    jsonl = []
    for split, n in (("train", 240), ("dev", 60), ("test", 60)):
        rows = review_rows(rng, n)
        write(HERE / "reviews" / f"{split}.csv", csv_lines(["id", "review", "label"],
                                                           [(f"{split}-{i}", r, y) for i, (r, y) in enumerate(rows)]))
        jsonl += [json.dumps(dict(review=r, label=y, split=split)) for r, y in rows]
    write(HERE / "reviews" / "reviews.jsonl", jsonl)
    for split, n in (("train", 160), ("dev", 60)):
        write(HERE / "pairs" / f"{split}.tsv", ["sentence1\tsentence2\tsimilarity", *pair_rows(rng, n)])


def write(path: Path, lines: list[str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")


def main() -> None:
    rng = random.Random(0)
    for split, n in (("train", 40), ("dev", 24)):
        write(HERE / "glue" / "SST-2" / f"{split}.tsv", sst2_rows(rng, n))
        write(HERE / "glue" / "MRPC" / f"{split}.tsv", mrpc_rows(rng, n, 100_000 if split == "train" else 500_000))
        write(HERE / "glue" / "STS-B" / f"{split}.tsv", stsb_rows(rng, n))
    for split, n in (("train", 40), ("valid", 24), ("test", 24)):
        write(HERE / "conll2003" / f"{split}.txt", conll_sentences(rng, n))
    write_own_data_sets()


if __name__ == "__main__":
    main()
