"""Knowledge storage and extraction on synthetic biographies (Allen-Zhu & Li, "Physics of Language Models: Part 3.1,
Knowledge Storage and Extraction", 2023).

Every person has a unique full name and five attributes: birth date, birth city, university, major and employer.
Training text holds `exposure` biography paragraphs per person (each sentence a random paraphrase of its
attribute, the sentences in random order, the full name in every sentence), and question/answer pairs for a
`qa_fraction` of the people. Evaluation asks the same questions about the OTHER people: their biographies were in
training, their questions never were, so answering needs knowledge stored in a form that questions can extract.
People are spread evenly over the exposure levels, and recall is reported per level (acc_1x, acc_4x, ...).

Text form (byte-level BPE trained on the training text). A paragraph is plain training text:

    Ada Lovelace was born in London. Ada Lovelace works for Northwind Labs. Ada Lovelace majored in ...

A question is a prompt ending at "A:"; the answer starts with a space (so its tokens are the ones the value has
inside a biography sentence) and ends at <eos>; only the first line of a completion is judged:

    Q: Where was Ada Lovelace born?\\nA: London<eos>

Splits are deterministic in `seed`; val and test split the held-out people's questions between them.
"""

from __future__ import annotations

import functools
import random
from dataclasses import dataclass
from typing import Literal

from suite.errors import UsageError, check_range
from tasks.base import EOS, Task, check_options, first_line, results_scorer
from tasks.tokenizer import MIN_BPE_VOCAB, byte_level_bpe

FIRST_NAMES = [
    "Ada", "Boris", "Clara", "Dmitri", "Elena", "Farid", "Greta", "Hiro", "Ingrid", "Jonas", "Keiko", "Lars",
    "Maren", "Nikolai", "Olga", "Pavel", "Quinn", "Rosa", "Stefan", "Tamsin", "Ulrich", "Vera", "Wendell", "Xenia",
    "Yusuf", "Zora", "Anselm", "Bettina", "Cyrus", "Delphine", "Emil", "Fiona", "Gideon", "Helga", "Ivo", "Juno",
    "Kasimir", "Lucia", "Matteo", "Nadia", "Otto", "Priya", "Rafael", "Sabine", "Tobias", "Ursula", "Viktor",
    "Wilma", "Yara", "Zeno",
]
LAST_NAMES = [
    "Abernathy", "Bergstrom", "Castellano", "Drummond", "Eriksen", "Fairweather", "Galloway", "Hartmann",
    "Iwasaki", "Jablonski", "Kowalczyk", "Lindqvist", "Montague", "Nakamura", "Okonkwo", "Pemberton", "Quintero",
    "Rasmussen", "Sorensen", "Thornbury", "Underwood", "Valdivia", "Whitcombe", "Yablonsky", "Zimmermann",
    "Ashcroft", "Blackwood", "Cavendish", "Delacroix", "Eastwood", "Fitzgerald", "Grimaldi", "Holloway",
    "Ivanova", "Kensington", "Lockhart", "Marchetti", "Novak", "Oyelaran", "Petrakis", "Radcliffe", "Salvatore",
    "Tanaka", "Vasquez", "Wakefield", "Ellsworth", "Halvorsen", "Moreau", "Sinclair", "Takahashi",
]
MONTHS = ["January", "February", "March", "April", "May", "June", "July", "August", "September", "October",
          "November", "December"]
VALUES = {
    "birth_city": [
        "London", "Paris", "Lisbon", "Oslo", "Vienna", "Prague", "Dublin", "Madrid", "Warsaw", "Athens", "Cairo",
        "Nairobi", "Lagos", "Mumbai", "Jakarta", "Manila", "Seoul", "Osaka", "Sydney", "Auckland", "Toronto",
        "Chicago", "Denver", "Boston", "Havana", "Lima", "Santiago", "Bogota", "Quito", "Montevideo",
    ],
    "university": [
        "Stanford University", "Harvard University", "Princeton University", "Yale University",
        "Cornell University", "Columbia University", "Duke University", "Rice University", "Brown University",
        "University of Oxford", "University of Cambridge", "University of Edinburgh", "University of Toronto",
        "University of Tokyo", "University of Melbourne", "Heidelberg University", "Uppsala University",
        "Leiden University", "Sorbonne University", "Peking University", "Tsinghua University",
        "Seoul National University", "McGill University", "ETH Zurich", "Imperial College London",
    ],
    "major": [
        "Physics", "Chemistry", "Biology", "Mathematics", "Computer Science", "Economics", "History", "Philosophy",
        "Linguistics", "Psychology", "Sociology", "Architecture", "Astronomy", "Geology", "Statistics",
        "Electrical Engineering", "Mechanical Engineering", "Civil Engineering", "Music", "Political Science",
        "Anthropology", "Literature", "Neuroscience", "Marine Biology", "Art History",
    ],
    "employer": [
        "Northwind Labs", "Bluefin Robotics", "Cobalt Systems", "Driftwood Media", "Emberline Energy",
        "Foxglove Pharma", "Granite Bank", "Harborview Hospital", "Ironclad Motors", "Juniper Airlines",
        "Keystone Foods", "Lumen Optics", "Meridian Shipping", "Nimbus Software", "Orchard Farms",
        "Pinnacle Insurance", "Quarry Steel", "Redwood Publishing", "Silverline Rail", "Tidewater Logistics",
        "Umbra Games", "Vantage Consulting", "Willow Textiles", "Zephyr Telecom", "Aurora Chemicals",
    ],
}
ATTRIBUTES = ["birth_date", "birth_city", "university", "major", "employer"]
SENTENCES = {  # >= 3 paraphrases per attribute, each naming the person in full
    "birth_date": ["{name} was born on {value}.", "{name} came into this world on {value}.",
                   "The birthday of {name} is {value}.", "{name} celebrates a birthday on {value}."],
    "birth_city": ["{name} was born in {value}.", "{name} is a native of {value}.",
                   "The birthplace of {name} is {value}.", "{name} spent childhood in {value}, the city of birth."],
    "university": ["{name} studied at {value}.", "{name} graduated from {value}.",
                   "{name} received an education at {value}.", "{name} is an alumnus of {value}."],
    "major": ["{name} majored in {value}.", "{name} completed a degree in {value}.",
              "The field of study of {name} was {value}.", "{name} focused on {value} at university."],
    "employer": ["{name} works for {value}.", "{name} is employed by {value}.", "{name} has a job at {value}.",
                 "{name} earns a living at {value}."],
}
LONGEST_ANSWER = max(len(f" {value}".encode()) for value in [*sum(VALUES.values(), []), "September 28, 2005"])
"""In bytes: no byte-level BPE (this task's own, or a data mix's) needs more tokens than that for an answer."""
QUESTIONS = {
    "birth_date": "When was {name} born?", "birth_city": "Where was {name} born?",
    "university": "Which university did {name} attend?", "major": "What did {name} study?",
    "employer": "Which company does {name} work for?",
}


@dataclass(frozen=True)
class Person:
    name: str
    attributes: dict[str, str]
    exposure: int
    """Biography paragraphs in the training text."""
    qa_in_training: bool
    """Whether this person's questions are training documents (else they are validation or test questions)."""


class Biographies(Task):
    name = "biographies"
    family = "knowledge"
    primary = "acc"
    validate = True
    generation = {"until": [EOS, "\n"], "max_gen_toks": LONGEST_ANSWER + 1}

    # the list default is copied, never changed
    def __init__(self, num_people: int = 400, exposures: list[int] = [1, 4, 16], qa_fraction: float = 0.5,  # noqa: B006
                 num_val: int = 200, seed: int = 0, vocab_size: int = 1024,
                 loss_on: Literal["answer", "all"] = "answer"):
        """
        Args:
            num_people: Synthetic people, each with a unique full name (at most 50 * 50).
            exposures: Biography paragraphs per person in training, one level per group: people are spread evenly
                over the levels, and recall is reported per level (acc_1x, acc_4x, ...). Distinct, each >= 0.
            qa_fraction: The share of each level's people whose question/answer pairs are training documents
                (< 1); the questions about the others are the validation and test questions.
            num_val: How many of the held-out people's questions are validation questions; the rest are test.
            seed: Seed of the people, the text and the splits.
            vocab_size: Tokens of the byte-level BPE trained on the training text.
            loss_on: On question/answer pairs, train on the answer only ("answer") or on the whole pair ("all");
                biography paragraphs are always trained on in full.
        """
        check_range("biographies num_people", num_people, 1, len(FIRST_NAMES) * len(LAST_NAMES))
        if not exposures or len(set(exposures)) != len(exposures) or min(exposures) < 0:
            raise UsageError(f"biographies exposures={list(exposures)} is not allowed; allowed: a non-empty list of "
                             f"distinct paragraph counts >= 0, e.g. [1, 4, 16]")
        check_range("biographies qa_fraction", qa_fraction, 0.0, 1.0)  # 1.0: caught below, no one held out
        check_range("biographies vocab_size", vocab_size, MIN_BPE_VOCAB)
        check_options("biographies", loss_on, num_val=num_val)
        level_sizes = [len(range(level, num_people, len(exposures))) for level in range(len(exposures))]
        held_out = [size - round(qa_fraction * size) for size in level_sizes]
        if min(held_out) < 1:
            raise UsageError(f"biographies num_people={num_people} with qa_fraction={qa_fraction} leaves no held-out "
                             f"person at some of the {len(exposures)} exposure levels; allowed: more people or a "
                             f"smaller qa_fraction")
        if num_val >= len(ATTRIBUTES) * sum(held_out):
            raise UsageError(f"biographies num_val={num_val} leaves no test question: the held-out people have "
                             f"{len(ATTRIBUTES) * sum(held_out)}; allowed: < {len(ATTRIBUTES) * sum(held_out)}")
        self.num_people, self.exposures, self.qa_fraction = num_people, list(exposures), qa_fraction
        self.num_val, self.seed, self.loss_on = num_val, seed, loss_on
        self.bpe_vocab_size = vocab_size
        self.people = self._people(level_sizes)

    @functools.cached_property
    def tokenizer(self):
        """Trained on first use: a data mix that includes this task trains its own instead."""
        texts = [doc.get("text") or doc["prompt"] + doc["answer"] for doc in self.documents("train")]
        return byte_level_bpe(texts, self.bpe_vocab_size)

    @property
    def metrics(self) -> list[str]:
        """Every metric `score` reports for this instance's test documents."""
        return ["acc"] + [f"acc_{exposure}x" for exposure in self.exposures]

    def _people(self, level_sizes: list[int]) -> list[Person]:
        """The people, in random order; the k-th has exposure level k % levels; the first round(qa_fraction * size)
        of each level have their questions in training."""
        rng = random.Random(f"biographies/{self.seed}/people")
        names = rng.sample(range(len(FIRST_NAMES) * len(LAST_NAMES)), self.num_people)
        people = []
        for k, index in enumerate(names):
            level = k % len(self.exposures)
            name = f"{FIRST_NAMES[index // len(LAST_NAMES)]} {LAST_NAMES[index % len(LAST_NAMES)]}"
            attributes = {"birth_date": f"{rng.choice(MONTHS)} {rng.randint(1, 28)}, {rng.randint(1940, 2005)}",
                          **{attribute: rng.choice(values) for attribute, values in VALUES.items()}}
            in_training = k // len(self.exposures) < round(self.qa_fraction * level_sizes[level])
            people.append(Person(name, attributes, self.exposures[level], in_training))
        return people

    @staticmethod
    def paragraph(person: Person, rng: random.Random) -> str:
        """One biography: a random paraphrase per attribute, in random order."""
        order = rng.sample(ATTRIBUTES, len(ATTRIBUTES))
        return " ".join(rng.choice(SENTENCES[attribute]).format(name=person.name, value=person.attributes[attribute])
                        for attribute in order)

    @staticmethod
    def questions(person: Person) -> list[dict]:
        """The person's five questions as documents, with the attribute asked and the person's exposure."""
        return [{"prompt": f"Q: {QUESTIONS[attribute].format(name=person.name)}\nA:",
                 "answer": " " + person.attributes[attribute], "attribute": attribute, "exposure": person.exposure}
                for attribute in ATTRIBUTES]

    def _documents(self) -> dict[str, list[dict]]:
        rng = random.Random(f"biographies/{self.seed}/text")
        train: list[dict] = []
        held_out: list[dict] = []
        for person in self.people:
            train += [{"text": self.paragraph(person, rng)} for _ in range(person.exposure)]
            if person.qa_in_training:
                train += [{"prompt": q["prompt"], "answer": q["answer"]} for q in self.questions(person)]
            else:
                held_out += self.questions(person)
        rng.shuffle(train)
        rng.shuffle(held_out)
        return {"train": train, "val": held_out[: self.num_val], "test": held_out[self.num_val:]}

    @staticmethod
    def score(doc: dict, completion: str) -> dict[str, float]:
        """acc: the completion's first line is the answer (case and surrounding space aside); acc_{e}x: the same,
        reported under the exposure level of the document's person when the document records it."""
        correct = float(normalize(first_line(completion)) == normalize(doc["answer"]))
        scores = {"acc": correct}
        if "exposure" in doc:
            scores[f"acc_{doc['exposure']}x"] = correct
        return scores


def normalize(answer: str) -> str:
    return " ".join(answer.split()).casefold()


process_results = results_scorer(Biographies)
"""lm-eval's scorer for tasks/biographies.yaml."""
