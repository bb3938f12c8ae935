"""The synthetic demo corpus: deterministic, TinyStories-shaped, varied, and quick to make."""

from __future__ import annotations

import random
import re

from cs336_basics.data import EOT, generate_demo_corpus
from cs336_basics.data.demo_corpus import DEFAULT_NUM_STORIES
from cs336_basics.data.prepare import DEMO_SPLITS


def _stories(text: str) -> list[str]:
    assert text.endswith(f"\n{EOT}\n")
    return text[: -len(f"\n{EOT}\n")].split(f"\n{EOT}\n")


def test_same_seed_same_text_different_seed_different_text():
    assert generate_demo_corpus(seed=0, num_stories=50) == generate_demo_corpus(seed=0, num_stories=50)
    assert generate_demo_corpus(seed=0, num_stories=50) != generate_demo_corpus(seed=1, num_stories=50)


def test_does_not_touch_global_random_state():
    random.seed(123)
    expected = random.random()
    random.seed(123)
    generate_demo_corpus(seed=5, num_stories=10)
    assert random.random() == expected


def test_story_shape():
    stories = _stories(generate_demo_corpus(seed=0, num_stories=300))
    assert len(stories) == 300
    for story in stories:
        assert EOT not in story and "{" not in story and "}" not in story
        assert story[0].isupper() and story.rstrip()[-1] in '.!"'
        assert 2 <= story.count("\n") + 1 <= 8  # a few paragraphs
    with_dialogue = sum('"' in s for s in stories)
    assert with_dialogue > 0.8 * len(stories)


def test_characters_places_and_plots_vary():
    stories = _stories(generate_demo_corpus(seed=0, num_stories=1000))
    assert len(set(stories)) == len(stories)
    openings = {s.split(".")[0] for s in stories}
    assert len(openings) > 500
    names = set(re.findall(r"named (\w+)", " ".join(stories)))
    assert len(names) > 100
    assert len(set(re.findall(r"\b\w+\b", " ".join(stories)))) > 900


def test_valid_seed_is_held_out_from_train_seed():
    """At the real demo split's sizes (prepare.DEMO_SPLITS), no valid story also appears in train."""
    (train_seed, n_train), (valid_seed, n_valid) = DEMO_SPLITS["train"], DEMO_SPLITS["valid"]
    assert train_seed != valid_seed
    train = set(_stories(generate_demo_corpus(seed=train_seed, num_stories=n_train)))
    valid = _stories(generate_demo_corpus(seed=valid_seed, num_stories=n_valid))
    assert len(train) == n_train and len(valid) == n_valid
    assert sum(s in train for s in valid) == 0


def test_default_size_is_a_few_megabytes():
    text = generate_demo_corpus()
    assert 1_000_000 < len(text.encode("utf-8")) < 8_000_000
    assert text.count(EOT) == DEFAULT_NUM_STORIES
