"""A SYNTHETIC corpus of simple children's stories in the style of TinyStories, for offline demos and tests.

Nothing here comes from TinyStories or any other dataset: a small hand-written grammar (plots made of
beats, each beat with several sentence templates, filled with names, animals, places, toys and feelings)
is sampled with ``random.Random(seed)``. Every story has characters with names, a place, an object, a
problem and a resolution, and some dialogue in quotes; stories are separated by ``<|endoftext|>`` lines.
The grammar is small enough for a tiny model to learn its structure and varied enough that it cannot
memorise it in a few hundred steps. It is a stand-in for real data, not a substitute for it.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from cs336_basics.data.chunking import EOT

DEFAULT_NUM_STORIES = 6000


def _words(text: str) -> tuple[str, ...]:
    return tuple(text.split())


GIRL_NAMES = _words(
    "Lily Mia Sue Anna Lucy Amy Sara Jane Kim Ellie Zoe Molly Emma Ella Rose Daisy Ava Lola Kate Sophie "
    "Grace Ruby Tina Nora Maya Ivy Hannah Clara Rosie Bella Julia Lena Alice Poppy Olivia Sally Fiona Eva "
    "Chloe Hazel Luna Stella Violet Penny Millie Matilda Isla Freya Willow Ruth Heidi Greta Wendy Beth "
    "Martha Nina Elsa Iris Mabel Dora Betty Lottie Megan Abby Holly Jenny Katie Sadie Tessa Amber"
)
BOY_NAMES = _words(
    "Tim Tom Ben Max Sam Jack Bob Mark Jake Leo Billy Joe Finn Mike Nick Peter Ollie Timmy Alex Danny "
    "Henry Oscar Theo Lucas Ryan Noah Eli Adam Luke Jamie Toby Charlie Ted Milo Hugo Kevin Freddie Paul "
    "Arthur Jasper Felix Rupert Harry George Oliver Simon Dylan Owen Caleb Jonah Ethan Mason Gus Wyatt "
    "Archie Stanley Louis Frank Walter Eddie Robin Percy Bruno Ivan Marco Sean Kyle Victor Joey"
)
PET_NAMES = _words(
    "Spot Fluffy Buddy Whiskers Coco Pip Sunny Mittens Rex Benny Puff Snowy Rusty Lucky Ziggy Honey Pepper "
    "Bubbles Patch Socks Biscuit Nibbles Ginger Sparky Button Peanut Mocha Tiger Shadow Cookie Pickles "
    "Waffles Noodle Marble Clover Pudding Hopper Squeaky Toffee Bramble Thistle Dotty Fuzzy Jelly Pebble "
    "Maple Acorn Dusty Sprout Wiggles"
)
ANIMALS = _words(
    "cat dog bunny bear bird duck fox frog mouse puppy kitten squirrel lion elephant turtle owl pig cow "
    "horse sheep monkey hen goat deer hedgehog penguin giraffe zebra tiger raccoon beaver otter panda "
    "koala dolphin dragon unicorn robin parrot hamster"
)
CHILD_ADJS = _words(
    "little kind happy brave shy curious clever silly friendly cheerful gentle busy smart quiet polite lively"
)
ANIMAL_ADJS = _words(
    "little fluffy small happy brave curious playful soft fast sleepy friendly tiny spotted furry hungry clumsy"
)
PARENTS = (("Mom", "she", "her"), ("Dad", "he", "his"), ("Grandma", "she", "her"), ("Grandpa", "he", "his"))
PLACES = (
    ("the park", "at", ("big swings", "a long slide", "tall trees", "a little pond", "green grass")),
    ("the garden", "in", ("red flowers", "a big tree", "tall sunflowers", "a small fence", "buzzing bees")),
    ("the forest", "in", ("tall trees", "soft moss", "a little path", "singing birds", "big rocks")),
    ("the beach", "at", ("soft sand", "pretty shells", "big waves", "a red crab", "warm sun")),
    ("the farm", "on", ("a red barn", "happy cows", "a muddy pond", "green fields", "a tall fence")),
    (
        "the meadow",
        "in",
        ("yellow flowers", "tall grass", "busy bees", "a little hill", "pretty butterflies"),
    ),
    (
        "the playground",
        "at",
        ("a big slide", "a sandbox", "red swings", "a climbing frame", "a merry-go-round"),
    ),
    ("the backyard", "in", ("a small tree", "green grass", "a wooden fence", "a little pond", "a swing")),
    ("the lake", "by", ("blue water", "white ducks", "a wooden dock", "tall reeds", "smooth stones")),
    ("the zoo", "at", ("big lions", "tall giraffes", "noisy monkeys", "a happy elephant", "pink birds")),
    ("the hill", "on", ("soft grass", "a big rock", "a lone tree", "a great view", "pretty flowers")),
    (
        "the library",
        "at",
        ("many books", "soft chairs", "a big window", "a quiet corner", "a kind librarian"),
    ),
    ("the river", "by", ("fast water", "a wooden bridge", "big fish", "smooth pebbles", "a little boat")),
    (
        "the mountain",
        "on",
        ("cold snow", "tall pine trees", "a winding trail", "a rocky cave", "a rushing stream"),
    ),
    (
        "the village",
        "in",
        ("tiny houses", "a busy bakery", "a stone well", "a clock tower", "friendly neighbors"),
    ),
    (
        "the orchard",
        "in",
        ("apple trees", "ripe pears", "a wooden ladder", "buzzing bees", "a basket of plums"),
    ),
    ("the market", "at", ("juicy oranges", "fresh bread", "noisy sellers", "colorful tents", "sweet honey")),
    (
        "the castle",
        "in",
        ("a tall tower", "a long hall", "a grand throne", "a secret staircase", "shiny armor"),
    ),
    (
        "the jungle",
        "in",
        ("thick vines", "giant leaves", "chattering parrots", "a hidden waterfall", "colorful frogs"),
    ),
    ("the harbor", "at", ("big ships", "noisy seagulls", "fishing nets", "a tall lighthouse", "salty air")),
    (
        "the classroom",
        "in",
        ("small desks", "a green chalkboard", "a fish tank", "crayon drawings", "a big clock"),
    ),
    (
        "the pumpkin patch",
        "in",
        ("orange pumpkins", "curly vines", "a scarecrow", "bales of hay", "crunchy leaves"),
    ),
)
TOYS = (
    ("ball", ("red", "bouncy", "big", "shiny", "blue")),
    ("kite", ("blue", "colorful", "big", "long", "yellow")),
    ("teddy bear", ("soft", "brown", "old", "fluffy", "little")),
    ("doll", ("pretty", "new", "small", "favorite", "old")),
    ("toy car", ("red", "fast", "shiny", "little", "green")),
    ("toy boat", ("little", "white", "wooden", "blue", "fast")),
    ("book", ("big", "new", "old", "funny", "colorful")),
    ("hat", ("big", "red", "funny", "warm", "green")),
    ("blanket", ("soft", "warm", "yellow", "pink", "cozy")),
    ("drum", ("loud", "little", "red", "shiny", "new")),
    ("truck", ("big", "yellow", "dusty", "noisy", "red")),
    ("puzzle", ("big", "hard", "new", "colorful", "fun")),
    ("bucket", ("red", "little", "blue", "plastic", "green")),
    ("crown", ("golden", "shiny", "paper", "sparkly", "little")),
    ("robot", ("silver", "funny", "talking", "little", "clever")),
    ("balloon", ("red", "purple", "big", "round", "shiny")),
    ("scarf", ("woolly", "striped", "long", "warm", "orange")),
    ("whistle", ("loud", "silver", "tiny", "wooden", "shiny")),
    ("umbrella", ("yellow", "spotted", "big", "purple", "striped")),
    ("train set", ("wooden", "long", "new", "colorful", "electric")),
    ("jump rope", ("long", "pink", "striped", "new", "bright")),
    ("paint box", ("new", "big", "colorful", "little", "messy")),
    ("flashlight", ("bright", "small", "blue", "new", "heavy")),
    ("backpack", ("green", "big", "new", "purple", "heavy")),
)
HOBBIES = (
    "play with {pos} {toy}",
    "run in the grass",
    "sing songs",
    "draw pictures",
    "look at the stars",
    "read books",
    "jump in puddles",
    "build towers with blocks",
    "dance in the sun",
    "help {pos} family",
    "play outside",
    "watch the birds",
    "make new friends",
    "pick flowers",
    "splash in the river",
    "climb trees",
    "play hide and seek",
    "count the clouds",
    "bake with {pos} grandma",
    "ride {pos} scooter",
    "collect pretty stones",
    "tell funny jokes",
    "play music",
    "plant seeds in the garden",
)
WEATHER = (
    "It was a sunny day.",
    "The sun was warm and the sky was blue.",
    "It was a bright spring morning.",
    "It was a cold winter day.",
    "The wind was soft and the sky was clear.",
    "It was a warm summer afternoon.",
    "The birds were singing in the trees.",
    "It was a cloudy day, but it was not cold.",
    "Snowflakes were falling softly outside.",
    "The leaves were red, orange and yellow.",
    "A gentle breeze made the flowers dance.",
    "It was a quiet, foggy morning.",
)
LOOKS = (
    "{Sub} had curly hair and a big smile.",
    "{Sub} had bright eyes and rosy cheeks.",
    "{Sub} always wore {a_color} {color} {clothes}.",
    "{Sub} had a funny laugh that made everyone giggle.",
    "{Sub} lived in a small house with a {color} door.",
    "{Sub} had lots of friends in the neighborhood.",
)
COLORS = _words("red blue green yellow purple orange pink brown white gray")
CLOTHES = _words("hat coat dress sweater jacket cap scarf")
HIDING_SPOTS = (
    "under the bed",
    "behind the big tree",
    "in the tall grass",
    "under a pile of leaves",
    "near the pond",
    "in the toy box",
    "behind the sofa",
    "under a bush",
    "inside an old box",
    "next to the gate",
)
FEARS = (
    ("the dark", "the night light"),
    ("the big slide", "the slide"),
    ("the deep water", "the water"),
    ("the loud thunder", "the storm"),
    ("the tall tree", "the tree"),
    ("the big dog next door", "the dog"),
)
CRITTERS = (
    ("a little bird", "it", "had a hurt wing", "wrapped the wing in a soft cloth"),
    ("a small kitten", "it", "was stuck up in a tree", "got a ladder and helped it climb down"),
    ("a baby duck", "it", "had lost its mom", "walked it back to the pond to find its mom"),
    ("a tiny puppy", "it", "was cold and wet from the rain", "dried it with a warm towel"),
    ("a little frog", "it", "was stuck in a jar", "gently tipped the jar so it could hop out"),
    ("a small bee", "it", "was caught in a web", "helped it out with a long stick"),
)
SKILLS = (
    ("ride a bike", "rode the bike all the way down the street"),
    ("swim", "swam across the pool"),
    ("tie {pos} shoes", "tied both shoes all by {obj}self"),
    ("climb the big tree", "climbed up to the first branch"),
    ("read a big book", "read the whole page without help"),
    ("jump rope", "jumped ten times without stopping"),
    ("whistle", "made a loud, happy whistle"),
)
TREATS = (
    ("cookies", "the cookies"),
    ("a cake", "the cake"),
    ("muffins", "the muffins"),
    ("pancakes", "the pancakes"),
    ("a pie", "the pie"),
    ("bread", "the bread"),
)
FOUND_THINGS = (
    ("a shiny key", "a little door in the tree", "a box full of old toys"),
    ("an old map", "a path to the big rock", "a hidden garden full of flowers"),
    ("a small box", "a tiny lock", "a note that said to be kind to everyone"),
    ("a golden shell", "a soft sound like the sea", "a song that made everyone smile"),
    ("a magic stone", "a warm glow", "a wish that came true"),
)
GIFTS = ("a picture", "a card", "a necklace made of flowers", "a little clay pot", "a paper crown", "a song")
FEELINGS_GOOD = ("happy", "proud", "glad", "excited", "very happy")
FEELINGS_BAD = ("sad", "upset", "worried", "unhappy", "a little scared")


@dataclass
class _Character:
    name: str
    kind: str
    adj: str
    sub: str
    obj: str
    pos: str


def _article(word: str) -> str:
    return "an" if word[0].lower() in "aeiou" else "a"


def _cap(text: str) -> str:
    return text[:1].upper() + text[1:]


class _Story:
    """One story being written: the cast and props as template slots, plus the paragraphs so far."""

    def __init__(self, rng: random.Random):
        self.rng = rng
        hero = self._character(rng, set())
        friend = self._character(rng, {hero.name})
        parent, psub, ppos = rng.choice(PARENTS)
        place, prep, features = rng.choice(PLACES)
        toy, toy_adjs = rng.choice(TOYS)
        f1, f2 = rng.sample(features, 2)
        self.hero = hero
        self.slots = {
            "name": hero.name,
            "kind": hero.kind,
            "adj": hero.adj,
            "a_adj": _article(hero.adj),
            "sub": hero.sub,
            "Sub": _cap(hero.sub),
            "obj": hero.obj,
            "pos": hero.pos,
            "Pos": _cap(hero.pos),
            "friend": friend.name,
            "fkind": friend.kind,
            "fdesc": f"{friend.name} the {friend.kind}"
            if friend.kind not in ("girl", "boy")
            else friend.name,
            "fsub": friend.sub,
            "Fsub": _cap(friend.sub),
            "fobj": friend.obj,
            "fpos": friend.pos,
            "parent": parent,
            "psub": psub,
            "Psub": _cap(psub),
            "ppos": ppos,
            "place": place,
            "Place": _cap(place),
            "prep": prep,
            "feature1": f1,
            "feature2": f2,
            "toy": toy,
            "toyadj": rng.choice(toy_adjs),
            "good": rng.choice(FEELINGS_GOOD),
            "bad": rng.choice(FEELINGS_BAD),
        }
        color = rng.choice(COLORS)
        self.slots.update(color=color, a_color=_article(color), clothes=rng.choice(CLOTHES))
        self.slots["hobby"] = self.fill(rng.choice(HOBBIES))
        self.paragraphs: list[list[str]] = [[]]

    @staticmethod
    def _character(rng: random.Random, taken: set[str]) -> _Character:
        if rng.random() < 0.7:
            girl = rng.random() < 0.5
            names, kind = (GIRL_NAMES, "girl") if girl else (BOY_NAMES, "boy")
            adj = rng.choice(CHILD_ADJS)
        else:
            girl = rng.random() < 0.5
            names, kind = PET_NAMES, rng.choice(ANIMALS)
            adj = rng.choice(ANIMAL_ADJS)
        name = rng.choice([n for n in names if n not in taken])
        return _Character(name, kind, adj, *(("she", "her", "her") if girl else ("he", "him", "his")))

    def fill(self, template: str) -> str:
        return template.format_map(self.slots)

    def say(self, *options: str) -> None:
        """Add one sentence (or a few), picked at random from ``options``."""
        self.paragraphs[-1].append(self.fill(self.rng.choice(options)))

    def maybe(self, p: float, *options: str) -> None:
        if self.rng.random() < p:
            self.say(*options)

    def new_paragraph(self) -> None:
        if self.paragraphs[-1]:
            self.paragraphs.append([])

    def set(self, **slots: str) -> None:
        self.slots.update({k: self.fill(v) for k, v in slots.items()})

    def text(self) -> str:
        return "\n".join(" ".join(p) for p in self.paragraphs if p)


def _opening(s: _Story) -> None:
    s.say(
        "Once upon a time, there was {a_adj} {adj} {kind} named {name}.",
        "Once upon a time, in a small town, there lived {a_adj} {adj} {kind} named {name}.",
        "There was once {a_adj} {adj} {kind} called {name}.",
        "{name} was {a_adj} {adj} {kind} who lived near {place}.",
        "One day, {a_adj} {adj} {kind} named {name} woke up early.",
        "Long ago, there was {a_adj} {kind} named {name}. {Sub} was very {adj}.",
    )
    s.say(
        "{Sub} loved to {hobby}.",
        "{name} liked to {hobby} every day.",
        "More than anything, {sub} loved to {hobby}.",
    )
    s.maybe(0.4, *LOOKS)
    s.maybe(0.5, *WEATHER)


def _ending(s: _Story, moral: str) -> None:
    s.new_paragraph()
    s.set(moral=moral)
    s.say(
        "From that day on, {name} and {friend} were best friends.",
        "{name} learned that {moral}.",
        "That day, {name} learned that {moral}.",
        "{name} smiled. {Sub} knew that {moral}.",
        "They played together until the sun went down.",
        "It was the best day ever.",
    )
    s.maybe(
        0.5,
        "{Sub} felt {good} and went home with a big smile.",
        "The end.",
        "And they all lived happily ever after.",
    )


def _lost_toy(s: _Story) -> str:
    s.set(spot1=s.rng.choice(HIDING_SPOTS))
    s.set(spot2=s.rng.choice([h for h in HIDING_SPOTS if h != s.slots["spot1"]]))
    s.say(
        "{name} had {a_toyadj} {toyadj} {toy}. {Sub} took it everywhere.",
        "{Pos} favorite toy was {a_toyadj} {toyadj} {toy}.",
    )
    s.say("One day, {name} went to play {prep} {place}.", "One morning, {sub} took the {toy} to {place}.")
    s.maybe(0.6, "{Place} had {feature1} and {feature2}.", "There were {feature1} and {feature2}.")
    s.new_paragraph()
    s.say(
        "When it was time to go home, {name} could not find the {toy}!",
        "After a while, {name} looked around. The {toy} was gone!",
    )
    s.say('"Oh no! Where is my {toy}?" {sub} cried.', '{name} felt {bad}. "I lost my {toy}," {sub} said.')
    s.say(
        "{Sub} looked {spot1}, but it was not there.",
        "{Sub} searched {spot1} and {spot2}, but {sub} could not find it.",
    )
    s.say(
        '{fdesc} saw {obj}. "I will help you look!" said {friend}.',
        '{Pos} friend {friend} came by. "Do not be sad. Let us look together," {fsub} said.',
    )
    s.new_paragraph()
    s.say(
        "They looked high and low. At last, {friend} found the {toy} {spot2}!",
        "Then {name} heard a funny sound. It was the {toy}, {spot2}!",
        "They looked and looked. Soon, {name} saw something {toyadj} {spot2}. It was the {toy}!",
    )
    s.say(
        '"Thank you, {friend}!" said {name}. {Sub} gave {fobj} a big hug.',
        '{name} was so {good}. "You are a good friend," {sub} said.',
    )
    return s.rng.choice(
        ("friends help each other", "it is good to keep your things safe", "you should never give up")
    )


def _sharing(s: _Story) -> str:
    s.say(
        "{name} got {a_toyadj} {toyadj} {toy} from {parent}, and {sub} loved it very much.",
        "{name} had {a_toyadj} {toyadj} {toy}. It was {pos} best toy.",
    )
    s.say("{Sub} took it to {place} to play.", "One day, {sub} played with it {prep} {place}.")
    s.new_paragraph()
    s.say(
        '{fdesc} came over. "Can I play with your {toy}?" {fsub} asked.',
        '{friend} saw the {toy}. "Wow! May I play too?" asked {friend}.',
    )
    s.say(
        '"No! It is mine," said {name}. {Sub} held the {toy} close.',
        '{name} did not want to share. "Go away," {sub} said.',
    )
    s.say("{friend} was {bad}. {Fsub} walked away slowly.", "{friend} looked down and began to cry.")
    s.new_paragraph()
    s.say(
        "{name} played alone, but it was not fun. {Sub} felt bad inside.",
        "Soon, {name} felt lonely. Playing alone was no fun.",
    )
    s.maybe(0.5, '{parent} came and said, "Sharing makes everyone happy, {name}."')
    s.say(
        '{name} ran to {friend}. "I am sorry. Let us play together," {sub} said.',
        '{name} gave the {toy} to {friend}. "You can have a turn," {sub} said with a smile.',
    )
    s.say("{friend} smiled. They played with the {toy} all day.", "They took turns and laughed a lot.")
    return "sharing is more fun than playing alone"


def _fear(s: _Story) -> str:
    fear, short = s.rng.choice(FEARS)
    s.set(fear=fear, short=short)
    s.say("{name} was scared of {fear}.", "There was one thing {name} did not like: {fear}.")
    s.say(
        "Every time {sub} saw {short}, {sub} wanted to run and hide.",
        "When {sub} thought about {short}, {pos} tummy felt funny.",
    )
    s.new_paragraph()
    s.say(
        "One day, {name} went to {place} with {parent}.", "One day, {friend} asked {name} to come to {place}."
    )
    s.say(
        '"I am scared," {name} said. "What if something bad happens?"',
        '{name} stopped. "I can not do it," {sub} said in a small voice.',
    )
    s.say(
        '{parent} held {pos} hand. "Be brave. I am right here," {psub} said.',
        '{friend} smiled. "I was scared too, but it is not so bad. Try with me!"',
    )
    s.new_paragraph()
    s.say(
        "{name} took a deep breath. {Sub} tried, one small step at a time.",
        "{name} closed {pos} eyes and counted to three. Then {sub} tried.",
    )
    s.say(
        "It was not scary at all! It was fun!",
        "Soon {sub} was not scared anymore. {Sub} even laughed.",
    )
    s.say(
        '"I did it!" {name} shouted. {Sub} felt so {good}.',
        "{parent} clapped. {name} was very proud of {obj}self.",
    )
    return s.rng.choice(("being brave is better than being scared", "you can do hard things if you try"))


def _helping(s: _Story) -> str:
    critter, it, trouble, fix = s.rng.choice(CRITTERS)
    s.set(critter=critter, it=it, trouble=trouble, fix=fix)
    s.say("One day, {name} went for a walk {prep} {place}.", "{name} was playing {prep} {place}.")
    s.maybe(0.5, "{Place} had {feature1} and {feature2}.")
    s.say(
        "Suddenly, {sub} saw {critter}. It {trouble}.",
        "{Sub} heard a small sound. It was {critter}, and it {trouble}.",
    )
    s.new_paragraph()
    s.say(
        '"Poor thing," said {name}. "I will help you."',
        '{name} felt {bad} for it. "Do not worry, little one," {sub} said.',
    )
    s.maybe(0.6, "{Sub} ran to get {parent}.", "{Sub} called {friend} to come and help.")
    s.say("Together, they {fix}.", "{name} {fix}.", "Very carefully, {name} {fix}.")
    s.new_paragraph()
    s.say(
        "Soon, it was happy again. It looked at {name} as if to say thank you.",
        "After that, it was safe and warm. It made a happy little sound.",
    )
    s.say("{name} felt {good}. Helping felt good.", '"You did a kind thing," said {parent}. {name} smiled.')
    return s.rng.choice(("it is good to help others", "being kind makes everyone happy"))


def _broken(s: _Story) -> str:
    s.say(
        "{name} loved {pos} {toyadj} {toy}. {Sub} played with it every day.",
        "{name} had {a_toyadj} {toyadj} {toy} from {parent}.",
    )
    s.say(
        "One day, {name} and {friend} were playing with it {prep} {place}.",
        "One day, {sub} was playing {prep} {place}.",
    )
    s.new_paragraph()
    s.say(
        "Then, the {toy} fell and broke into two pieces!",
        "Oops! {name} dropped the {toy} and it broke.",
        "Suddenly, {friend} stepped on the {toy} by mistake. Crack!",
    )
    s.say(
        '{name} started to cry. "My {toy} is broken!"', "{name} felt very {bad}. {Sub} looked at the pieces."
    )
    s.maybe(0.5, '"I am sorry," said {friend}. "I did not mean to."')
    s.new_paragraph()
    s.say(
        '{parent} came over. "Do not cry. We can fix it," {psub} said.',
        '{friend} had an idea. "Let us ask {parent} for some glue!"',
    )
    s.say(
        "They got some glue and put the pieces back together.",
        "{parent} used tape and glue. {name} helped hold the pieces.",
    )
    s.say(
        "The {toy} was as good as new!", "Soon the {toy} was fixed. It looked a little funny, but it worked!"
    )
    s.say(
        '{name} hugged {parent}. "Thank you!" {sub} said.',
        "{name} and {friend} played with it again and laughed.",
    )
    return s.rng.choice(("things can be fixed if you work together", "it is okay to make mistakes"))


def _baking(s: _Story) -> str:
    treat, the_treat = s.rng.choice(TREATS)
    s.set(treat=treat, the_treat=the_treat)
    s.say(
        'One morning, {parent} said, "Let us make {treat} today!"',
        "{name} wanted to make {treat} for {friend}.",
    )
    s.say(
        "{name} clapped {pos} hands. {Sub} loved to help in the kitchen.",
        "{name} got a big bowl and a spoon.",
    )
    s.new_paragraph()
    s.say(
        "They put in flour, sugar and eggs.",
        "{name} mixed the flour and the milk. Then {sub} added the eggs.",
    )
    s.say(
        "But {name} spilled the flour! It was all over the floor.",
        "Oh no! {name} put in too much salt.",
        "But the bowl tipped over, and the mix went everywhere!",
    )
    s.say('{name} felt {bad}. "I made a mess," {sub} said.', '"Oops," said {name}. {Sub} looked at {parent}.')
    s.say(
        '{parent} laughed. "That is okay. We can try again," {psub} said.',
        '"Everyone makes mistakes," said {parent}. "Let us clean up and start again."',
    )
    s.new_paragraph()
    s.say("This time, {name} was very careful.", "They tried again, slowly and carefully.")
    s.say("Soon, {the_treat} smelled so good!", "At last, {the_treat} came out warm and yummy.")
    s.say(
        "{name} shared {the_treat} with {friend}. {friend} said it was the best treat ever.",
        "They ate {the_treat} together and smiled.",
    )
    return s.rng.choice(("it is okay to make mistakes if you try again", "sharing food with friends is fun"))


def _quarrel(s: _Story) -> str:
    s.say(
        "{name} and {friend} were best friends. They played {prep} {place} every day.",
        "{name} and {pos} friend {friend} went to {place} to play.",
    )
    s.maybe(0.5, "{Place} had {feature1} and {feature2}.")
    s.new_paragraph()
    s.say(
        "Both of them wanted to play with the {toy} first.",
        "They both wanted the same {toyadj} {toy}.",
    )
    s.say(
        '"It is my turn!" said {name}. "No, it is my turn!" said {friend}.',
        "They pulled and pulled. They were both angry.",
    )
    s.say("{friend} went home, and {name} sat alone.", "They stopped playing and did not talk.")
    s.new_paragraph()
    s.say(
        "{name} felt {bad}. {Sub} missed {pos} friend.",
        "After a while, {name} did not feel angry anymore. {Sub} felt lonely.",
    )
    s.say(
        '{Sub} went to {friend} and said, "I am sorry. You can go first."',
        '{name} said, "I am sorry, {friend}. Let us take turns."',
    )
    s.say(
        '{friend} smiled. "I am sorry too," {fsub} said.',
        '{friend} gave {obj} a hug. "Friends again?" "Friends again!"',
    )
    return s.rng.choice(("taking turns is better than fighting", "saying sorry can fix a friendship"))


def _exploring(s: _Story) -> str:
    thing, clue, prize = s.rng.choice(FOUND_THINGS)
    s.set(thing=thing, clue=clue, prize=prize)
    s.say("{name} was very curious. {Sub} liked to explore.", "{name} wanted to go on an adventure.")
    s.say("One day, {sub} went to {place} with {friend}.", "{Sub} walked to {place} to look around.")
    s.maybe(0.6, "{Place} had {feature1} and {feature2}.")
    s.new_paragraph()
    s.say("Under a rock, {name} found {thing}.", "Something was shining on the ground. It was {thing}!")
    s.say(
        '"What is this?" {name} asked. "Let us find out!" said {friend}.',
        "{name} picked it up and looked at it closely.",
    )
    s.say("Then they saw {clue}.", "Soon they found {clue}.", "Next, {name} noticed {clue}.")
    s.new_paragraph()
    s.say("They were a little scared, but they kept going.", "{name} held {friend}'s hand, and they went on.")
    s.say("At the end, they found {prize}!", "It led them to {prize}.")
    s.say(
        '"Wow!" said {name}. "This is the best adventure ever!"',
        "{name} and {friend} could not stop smiling.",
    )
    return s.rng.choice(("it is fun to explore with a friend", "there are surprises everywhere if you look"))


def _learning(s: _Story) -> str:
    skill, success = s.rng.choice(SKILLS)
    s.set(skill=skill, success=success)
    s.say("{name} wanted to learn to {skill}.", "{name} saw {friend} {skill}. {Sub} wanted to do it too.")
    s.say('"Can you help me?" {name} asked {parent}.', '"Will you teach me?" {name} asked {friend}.')
    s.new_paragraph()
    s.say(
        "The first time {sub} tried, {sub} fell down.",
        "It was very hard. {name} tried, but {sub} could not do it.",
    )
    s.say('"I will never learn," {name} said. {Sub} felt {bad}.', "{name} wanted to give up.")
    s.say(
        '"Try again," said {parent}. "Everyone falls at first."',
        '{friend} said, "You can do it! Just keep trying."',
    )
    s.new_paragraph()
    s.say("So {name} tried again, and again, and again.", "{name} practiced every day {prep} {place}.")
    s.say("One day, {name} {success}!", "At last, {name} {success}.")
    s.say(
        '"I did it!" {sub} shouted. Everyone clapped.',
        "{Sub} felt so {good}. All the hard work was worth it.",
    )
    return "you should never give up"


def _gift(s: _Story) -> str:
    s.set(gift=s.rng.choice(GIFTS))
    s.say("Tomorrow was {parent}'s birthday.", "{name} wanted to give {parent} a special surprise.")
    s.say(
        "{name} wanted to give {parent} a present, but {sub} had no money.",
        "{name} thought and thought about a gift.",
    )
    s.new_paragraph()
    s.say("Then {sub} had an idea. {Sub} would make {gift}!", '{friend} said, "Why not make {gift}?"')
    s.say(
        "{name} worked very hard. {Sub} used paper, glue and lots of colors.",
        "{name} went to {place} and found the prettiest things to use.",
    )
    s.maybe(0.5, "It was not easy, but {sub} did not stop.")
    s.new_paragraph()
    s.say(
        "The next day, {name} gave {parent} {gift}.",
        'In the morning, {name} said, "Happy birthday!" and gave {parent} {gift}.',
    )
    s.say(
        '{parent} smiled a big smile. "This is the best gift ever," {psub} said.',
        "{parent} hugged {name} tight. {Psub} was so happy.",
    )
    return s.rng.choice(("the best gifts come from the heart", "making someone happy makes you happy too"))


def _rainy_day(s: _Story) -> str:
    s.say(
        "{name} wanted to go to {place} to play with {friend}.",
        "Today, {name} and {friend} had a plan to play {prep} {place}.",
    )
    s.say(
        "But when {sub} looked out the window, it was raining.",
        "But then, dark clouds came and it started to rain.",
    )
    s.say(
        '"Now we can not play outside," {name} said. {Sub} was {bad}.',
        "{name} sat by the window and felt {bad}.",
    )
    s.new_paragraph()
    s.say(
        '{parent} said, "Let us build a fort with blankets!"',
        '{friend} had an idea. "We can have a tea party inside!"',
        '{parent} said, "Let us paint pictures of the rain."',
    )
    s.say("They had so much fun inside.", "They laughed and played all afternoon.")
    s.new_paragraph()
    s.say(
        "When the rain stopped, they saw a big rainbow in the sky.",
        "Later, the sun came out and the puddles were shiny.",
    )
    s.say(
        '"A rainy day can be fun too," said {name}.',
        "{name} and {friend} ran outside to jump in the puddles.",
    )
    return "you can have fun on any day"


def _honesty(s: _Story) -> str:
    s.set(thing=s.rng.choice(("{parent}'s favorite cup", "a big vase", "the cookie jar", "a pretty lamp")))
    s.say("{name} was playing with {pos} {toy} in the house.", "{name} was running around the house.")
    s.say(
        "Crash! {Sub} knocked over {thing}, and it broke.",
        "By mistake, {sub} bumped into {thing}. It fell and broke!",
    )
    s.say(
        "{name} was scared. {Sub} hid the pieces {spot}.",
        "{name} did not want to get in trouble, so {sub} hid.",
    )
    s.new_paragraph()
    s.say('{parent} came in. "What happened?" {psub} asked.', "Later, {parent} saw that {thing} was gone.")
    s.say(
        '"I do not know," said {name}. But {sub} felt bad inside.',
        "{name} did not say anything, but {pos} tummy hurt.",
    )
    s.new_paragraph()
    s.say(
        '{name} took a deep breath. "I broke it. I am sorry," {sub} said.',
        'At last, {name} said, "It was me. I am sorry."',
    )
    s.say(
        '{parent} hugged {obj}. "Thank you for telling the truth," {psub} said.',
        '{parent} smiled. "I am proud of you for being honest."',
    )
    s.say("{name} felt much better.", "{name} felt light and {good} again.")
    return "it is always best to tell the truth"


PLOTS = (
    _lost_toy,
    _sharing,
    _fear,
    _helping,
    _broken,
    _baking,
    _quarrel,
    _exploring,
    _learning,
    _gift,
    _rainy_day,
    _honesty,
)


def generate_story(rng: random.Random) -> str:
    """One story (a few short paragraphs) drawn from ``rng``."""
    s = _Story(rng)
    s.slots["a_toyadj"] = _article(s.slots["toyadj"])
    s.slots["spot"] = rng.choice(HIDING_SPOTS)
    _opening(s)
    s.new_paragraph()
    moral = rng.choice(PLOTS)(s)
    _ending(s, moral)
    return s.text()


def generate_demo_corpus(seed: int = 0, num_stories: int = DEFAULT_NUM_STORIES) -> str:
    """SYNTHETIC TinyStories-style text: ``num_stories`` stories, each followed by a ``<|endoftext|>`` line.

    Deterministic: the same ``(seed, num_stories)`` always gives the same text (only
    ``random.Random(seed)`` is used). About 0.8 kB per story.
    """
    rng = random.Random(seed)
    return "".join(f"{generate_story(rng)}\n{EOT}\n" for _ in range(num_stories))
