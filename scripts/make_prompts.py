"""Build the project's verifiable-instruction prompt set, data/prompts.jsonl.

Every prompt is an everyday task (topic x task template) followed by 1-3 IFEval-style constraints that
the rule judge can check. Seeded and stdlib-only, so two runs write byte-identical files:

    python scripts/make_prompts.py [--out data/prompts.jsonl] [--count 3000] [--seed 0]
"""

from __future__ import annotations

import argparse
import json
import random
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sppo.constraints import conflicts, describe, validate  # noqa: E402

# "topic phrase | keyword the response should mention"
TOPICS = """
saving money on groceries | groceries
learning a new language | language
growing tomatoes on a balcony | tomato
the water cycle | water
getting a good night's sleep | sleep
starting a morning routine | morning
walking a dog in the rain | dog
keeping a houseplant alive | plant
making friends in a new city | friends
riding a bicycle to work | bicycle
baking bread at home | bread
recycling plastic bottles | recycling
visiting a public library | library
planning a birthday party | party
cleaning a messy kitchen | kitchen
learning to play the guitar | guitar
drinking enough water | water
packing for a weekend trip | trip
writing a thank-you note | thanks
caring for a pet cat | cat
the phases of the moon | moon
reading before bed | reading
budgeting for a first apartment | budget
cooking rice on the stove | rice
studying for an exam | exam
how rainbows form | rainbow
taking a walk in the park | park
organizing a bookshelf | books
brewing a cup of tea | tea
making a paper airplane | airplane
watching birds in the backyard | birds
choosing a good pair of running shoes | shoes
preparing for a job interview | interview
why leaves change color in autumn | leaves
the life cycle of a butterfly | butterfly
saving energy at home | energy
learning to swim as an adult | swimming
writing a daily journal | journal
staying calm before a presentation | presentation
fixing a flat bicycle tire | tire
visiting a farmers market | market
building a snowman | snow
camping in the mountains | camping
making a simple salad | salad
teaching a child to tie shoelaces | shoelaces
how bees make honey | honey
keeping a clean desk | desk
volunteering at an animal shelter | shelter
traveling by train | train
composting food scraps | compost
the first day at a new school | school
stretching after exercise | stretching
choosing a book to read | book
painting a room | paint
flying a kite on a windy day | kite
listening to the ocean | ocean
how a compass works | compass
planting a tree | tree
making pancakes for breakfast | pancakes
caring for a goldfish | fish
taking better photos with a phone | photos
walking more every day | walking
writing a short poem | poem
learning to cook for one person | cooking
managing time during a busy week | time
playing board games with family | games
keeping a vegetable garden | garden
the history of the bicycle | bicycle
visiting a museum | museum
turning off screens before sleep | screens
meeting new neighbors | neighbors
making homemade soup | soup
why the sky is blue | sky
preparing for a thunderstorm | storm
learning basic first aid | aid
sharing a meal with friends | meal
keeping a car clean | car
saving for a holiday | holiday
drawing with colored pencils | drawing
the importance of breakfast | breakfast
a rainy afternoon at home | rain
picking fresh strawberries | strawberries
repairing a torn shirt | shirt
the sound of a city at night | city
hiking on a forest trail | forest
setting up a home aquarium | aquarium
baking chocolate chip cookies | cookies
learning to juggle | juggling
celebrating a friend's success | friend
getting ready for winter | winter
enjoying a summer picnic | picnic
writing a letter to your future self | letter
taking care of your teeth | teeth
choosing a healthy snack | snack
moving to a new house | house
how a rainbow of colors hides in sunlight | light
the night sky in the countryside | stars
visiting grandparents | grandparents
learning to knit a scarf | scarf
starting a small herb garden | herbs
riding a bus across town | bus
the smell of fresh coffee | coffee
cleaning up a local beach | beach
keeping a reading list | list
staying warm on a cold day | cold
making a grocery list | list
teaching a parrot to talk | parrot
watching a sunrise | sunrise
the joy of dancing | dancing
choosing a gift for a friend | gift
working from home | home
sending a postcard | postcard
going to the dentist | dentist
a lighthouse by the sea | lighthouse
building a sandcastle | sand
exploring a new neighborhood | neighborhood
fixing a leaking tap | tap
growing sunflowers | sunflower
the first snowfall of the year | snow
learning to whistle | whistle
feeding ducks at a pond | pond
organizing a closet | closet
a quiet morning by a river | river
writing a recipe card | recipe
preparing a lunchbox | lunch
""".strip()

TASK_TEMPLATES = [
    "Explain {topic} to a curious teenager.",
    "Give some practical tips for {topic}.",
    "Write the opening of a short story that involves {topic}.",
    "Describe {topic} to someone who has never experienced it.",
    "Compare two different ways of thinking about {topic}.",
    "Write a short email to a friend about {topic}.",
    "Summarize the main idea behind {topic}.",
    "Give simple step-by-step instructions related to {topic}.",
    "Write a short letter to a local newspaper about {topic}.",
    "List common mistakes people make with {topic}.",
    "Write a short poem about {topic}.",
    "Write a short blog post about {topic}.",
    "Write a brief dialogue between two friends discussing {topic}.",
    "Explain why someone might care about {topic}.",
    "Write a diary entry about a day spent on {topic}.",
    "Explain {topic} using a simple analogy.",
    "Write a short social media post about {topic}.",
    "Give a beginner's guide to {topic}.",
    "Answer a child's question about {topic}.",
    "Describe a memorable moment involving {topic}.",
]

END_PHRASES = [
    "Is there anything else I can help with?",
    "Thanks for reading.",
    "Let me know if you have any questions.",
    "That is all for now.",
    "Have a wonderful day.",
]
START_WORDS = ["Today", "Imagine", "First", "Yes", "Honestly", "Here", "Sure", "Once", "Well", "Remember"]
FILLER_WORDS = [
    "very",
    "really",
    "just",
    "thing",
    "things",
    "good",
    "basically",
    "actually",
    "important",
    "also",
]
SECOND_KEYWORDS = [
    "simple",
    "friend",
    "morning",
    "together",
    "careful",
    "happy",
    "time",
    "small",
    "bright",
    "quiet",
]

# Easy constraints (length, keywords, case, endings) dominate so a 135M chat model sometimes succeeds.
TYPE_WEIGHTS = {
    "max_words": 4.0,
    "include_keywords": 4.0,
    "end_with": 3.0,
    "lowercase": 2.5,
    "no_commas": 2.5,
    "min_words": 1.5,
    "exclude_words": 1.5,
    "start_with": 1.5,
    "bullet_count": 1.5,
    "title": 1.5,
    "max_sentences": 1.5,
    "postscript": 1.5,
    "paragraphs": 1.0,
    "quoted": 1.0,
    "placeholders": 1.0,
    "uppercase": 0.8,
    "json_format": 0.5,
}
# Instructions read naturally in this order: shape of the answer, content, style, then how it starts and ends.
READING_ORDER = (
    "json_format quoted title paragraphs bullet_count max_sentences max_words min_words include_keywords"
    " exclude_words placeholders lowercase uppercase no_commas start_with end_with postscript"
).split()
CONSTRAINTS_PER_PROMPT = {1: 0.35, 2: 0.4, 3: 0.25}


def parse_topics() -> list[tuple[str, str]]:
    rows = [line.split("|") for line in TOPICS.splitlines()]
    return [(phrase.strip(), keyword.strip()) for phrase, keyword in rows]


def make_constraint(kind: str, keyword: str, rng: random.Random) -> dict:
    if kind == "max_words":
        return {"type": kind, "n": rng.choice([40, 50, 60, 80, 100, 120])}
    if kind == "min_words":
        return {"type": kind, "n": rng.choice([20, 30, 40, 50])}
    if kind == "include_keywords":
        extra = [rng.choice(SECOND_KEYWORDS)] if rng.random() < 0.35 else []
        return {"type": kind, "words": [keyword, *extra]}
    if kind == "exclude_words":
        return {"type": kind, "words": sorted(rng.sample(FILLER_WORDS, rng.choice([1, 2])))}
    if kind == "end_with":
        return {"type": kind, "phrase": rng.choice(END_PHRASES)}
    if kind == "start_with":
        return {"type": kind, "word": rng.choice(START_WORDS)}
    if kind == "bullet_count":
        return {"type": kind, "n": rng.choice([2, 3, 4, 5])}
    if kind == "paragraphs":
        return {"type": kind, "n": rng.choice([2, 3])}
    if kind == "max_sentences":
        return {"type": kind, "n": rng.choice([2, 3, 4, 5])}
    if kind == "placeholders":
        return {"type": kind, "n": rng.choice([1, 2, 3])}
    return {"type": kind}


def sample_constraints(keyword: str, rng: random.Random) -> list[dict]:
    wanted = rng.choices(list(CONSTRAINTS_PER_PROMPT), weights=list(CONSTRAINTS_PER_PROMPT.values()))[0]
    picked: list[dict] = []
    for _ in range(50):
        if len(picked) == wanted:
            break
        kind = rng.choices(list(TYPE_WEIGHTS), weights=list(TYPE_WEIGHTS.values()))[0]
        candidate = make_constraint(kind, keyword, rng)
        if not any(conflicts(candidate, chosen) for chosen in picked):
            picked.append(candidate)
    return sorted(picked, key=lambda c: READING_ORDER.index(c["type"]))


def build_prompts(count: int = 3000, seed: int = 0) -> list[dict]:
    """`count` distinct prompt rows; tasks are cycled (reshuffled each pass) until enough are distinct."""
    rng = random.Random(seed)
    tasks = [
        (template.format(topic=phrase), keyword) for phrase, keyword in parse_topics() for template in TASK_TEMPLATES
    ]
    rows: list[dict] = []
    seen: set[str] = set()
    while len(rows) < count:
        order = list(range(len(tasks)))
        rng.shuffle(order)
        for index in order:
            if len(rows) == count:
                break
            task, keyword = tasks[index]
            constraints = sample_constraints(keyword, rng)
            for constraint in constraints:
                validate(constraint)
            prompt = " ".join([task, *(describe(c) for c in constraints)])
            if prompt in seen:
                continue
            seen.add(prompt)
            rows.append({"id": f"p{len(rows) + 1:05d}", "prompt": prompt, "constraints": constraints})
    return rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="data/prompts.jsonl", help="JSONL file to write.")
    parser.add_argument("--count", type=int, default=3000, help="Number of distinct prompts.")
    parser.add_argument("--seed", type=int, default=0, help="Seed of the topic/template/constraint draws.")
    args = parser.parse_args(argv)
    rows = build_prompts(args.count, args.seed)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("".join(json.dumps(row) + "\n" for row in rows))
    print(f"wrote {len(rows)} prompts to {out} ({out.stat().st_size / 1e6:.2f} MB)")


if __name__ == "__main__":
    main()
