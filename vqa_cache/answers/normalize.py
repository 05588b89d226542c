"""Answer normalization as the official VQA evaluation does it, and the ground truth the metric compares.

``normalize_answer`` is the normalization the official VQA evaluation applies
(GT-Vision-Lab/VQA, PythonEvaluationTools/vqaEvaluation/vqaEval.py,
``processPunctuation`` then ``processDigitArticle``), re-implemented here with its
quirks kept on purpose, because a model is scored by exactly that code:

* newlines and tabs become spaces, then the text is stripped;
* each of the punctuation marks in ``PUNCTUATION`` is deleted when the text has that
  mark next to a space (``"x ,"`` or ``", x"``) or when the text contains a comma
  between two digits anywhere (``"1,000"``: then every mark is deleted); otherwise
  the mark becomes a space. The test is made on the text as given, mark by mark;
* a period not followed by a digit is deleted ("3.5" keeps its period, "no." loses
  it), but at most 32 of them: the official code passes ``re.UNICODE`` (= 32) where
  ``re.sub`` expects its count;
* apostrophes, colons, ``#``, ``$``, ``%``, ``&``, ``*``, ``|`` and ``~`` are *not*
  punctuation there and survive;
* the text is lowercased and split on whitespace; the words zero..ten and "none"
  become digits ("none" -> "0"); the articles a, an, the are dropped; a word in the
  contractions table is replaced ("dont" -> "don't"); words are joined by one space.

When the official code applies it depends on the protocol (``PROTOCOLS``), one question
at a time (``ground_truth`` and ``prediction_as_compared``):

* ``"current"``, vqaEval.py since commit a013f00 "Fixed processing answers bug"
  (11 March 2021): the human answers and the prediction are always whitespace-cleaned
  (newlines/tabs to spaces, strip); then, only when the cleaned human answers are not
  all the same string, both sides get the full normalization. Ten identical answers
  are compared as given: "Yes" does not match ten "yes".
* ``"2016"``, vqaEval.py before that commit (the copy LAVIS and OpenVQA ship): the
  prediction always gets the full normalization; the human answers are left exactly
  as given when they are all the same string, and otherwise get ``processPunctuation``
  only (not lowercased, number words and articles kept).
* In both, a question with a single human answer (easy-VQA, CSV data) is scored by
  exact match after normalizing both sides: a project choice, since the official
  formula gives every prediction 0 there.

The vocabulary and the soft training targets (vocabulary.py) use the current ground
truth, so a class string scores in training what predicting it scores under the current
metric. ``NORMALIZER_VERSION`` names this behaviour; it is saved with every vocabulary.
"vqa-eval-1" (before) normalized every human answer fully, always. Vocabularies of
either version load: their answers are plain strings.
"""

from __future__ import annotations

import re
from functools import lru_cache

NORMALIZER_VERSION = "vqa-eval-2"

#: The official metric's versions (see the module docstring); the first is the default.
PROTOCOLS = ("current", "2016")

#: Marks that the official code deletes or turns into a space. Not ' : . (see above).
PUNCTUATION = tuple(';/[]"{}()=+\\_-><@`,?!')

#: Word -> digit map of the official code (note "none" -> "0").
NUMBER_WORDS = {
    "none": "0",
    "zero": "0",
    "one": "1",
    "two": "2",
    "three": "3",
    "four": "4",
    "five": "5",
    "six": "6",
    "seven": "7",
    "eight": "8",
    "nine": "9",
    "ten": "10",
}

ARTICLES = frozenset({"a", "an", "the"})

# The official contractions table, one "word replacement" pair per line, kept
# entry for entry, oddities included: "somebody'd" -> "somebodyd" goes backwards,
# "let's" and "she's" map to themselves, and the four keys with a capital I
# (Id've, I'dve, Im, Ive) can never match because the text is lowercased first.
_CONTRACTION_PAIRS = """
aint ain't
arent aren't
cant can't
couldve could've
couldnt couldn't
couldn'tve couldn't've
couldnt've couldn't've
didnt didn't
doesnt doesn't
dont don't
hadnt hadn't
hadnt've hadn't've
hadn'tve hadn't've
hasnt hasn't
havent haven't
hed he'd
hed've he'd've
he'dve he'd've
hes he's
howd how'd
howll how'll
hows how's
Id've I'd've
I'dve I'd've
Im I'm
Ive I've
isnt isn't
itd it'd
itd've it'd've
it'dve it'd've
itll it'll
let's let's
maam ma'am
mightnt mightn't
mightnt've mightn't've
mightn'tve mightn't've
mightve might've
mustnt mustn't
mustve must've
neednt needn't
notve not've
oclock o'clock
oughtnt oughtn't
ow's'at 'ow's'at
'ows'at 'ow's'at
'ow'sat 'ow's'at
shant shan't
shed've she'd've
she'dve she'd've
she's she's
shouldve should've
shouldnt shouldn't
shouldnt've shouldn't've
shouldn'tve shouldn't've
somebody'd somebodyd
somebodyd've somebody'd've
somebody'dve somebody'd've
somebodyll somebody'll
somebodys somebody's
someoned someone'd
someoned've someone'd've
someone'dve someone'd've
someonell someone'll
someones someone's
somethingd something'd
somethingd've something'd've
something'dve something'd've
somethingll something'll
thats that's
thered there'd
thered've there'd've
there'dve there'd've
therere there're
theres there's
theyd they'd
theyd've they'd've
they'dve they'd've
theyll they'll
theyre they're
theyve they've
twas 'twas
wasnt wasn't
wed've we'd've
we'dve we'd've
weve we've
werent weren't
whatll what'll
whatre what're
whats what's
whatve what've
whens when's
whered where'd
wheres where's
whereve where've
whod who'd
whod've who'd've
who'dve who'd've
wholl who'll
whos who's
whove who've
whyll why'll
whyre why're
whys why's
wont won't
wouldve would've
wouldnt wouldn't
wouldnt've wouldn't've
wouldn'tve wouldn't've
yall y'all
yall'll y'all'll
y'allll y'all'll
yall'd've y'all'd've
y'alld've y'all'd've
y'all'dve y'all'd've
youd you'd
youd've you'd've
you'dve you'd've
youll you'll
youre you're
youve you've
"""
CONTRACTIONS = dict(line.split() for line in _CONTRACTION_PAIRS.strip().splitlines())

_DIGIT_COMMA_DIGIT = re.compile(r"\d,\d")
# Official pattern "(?!<=\d)(\.)(?!\d)": its "(?!<=\d)" is a mistyped look-behind
# that can never fail in front of a ".", so only "not followed by a digit" counts.
_PERIOD = re.compile(r"\.(?!\d)")
_MAX_PERIODS_REMOVED = 32  # re.UNICODE, passed as the count by the official code


def clean_whitespace(text: str) -> str:
    """Newlines and tabs to spaces, then strip (the official first step)."""
    return text.replace("\n", " ").replace("\t", " ").strip()


def process_punctuation(text: str) -> str:
    """The official ``processPunctuation`` (see the module docstring)."""
    delete_all = _DIGIT_COMMA_DIGIT.search(text) is not None
    out = text
    for mark in PUNCTUATION:
        spaced = mark + " " in text or " " + mark in text
        out = out.replace(mark, "" if (delete_all or spaced) else " ")
    return _PERIOD.sub("", out, count=_MAX_PERIODS_REMOVED)


def process_digit_article(text: str) -> str:
    """The official ``processDigitArticle``: lowercase, digits, no articles, contractions."""
    words = []
    for word in text.lower().split():
        word = NUMBER_WORDS.get(word, word)
        if word not in ARTICLES:
            words.append(CONTRACTIONS.get(word, word))
    return " ".join(words)


@lru_cache(maxsize=1 << 17)  # answers repeat a lot: VQA v2 train has 4.4M answers, ~0.2M distinct
def normalize_answer(text: str) -> str:
    """Normalize an answer exactly as the official evaluation normalizes a prediction.

    >>> normalize_answer("Two dogs.")
    '2 dogs'
    >>> normalize_answer("The dont")
    "don't"
    """
    return process_digit_article(process_punctuation(clean_whitespace(text)))


def check_protocol(protocol: str) -> str:
    """``protocol`` when it is one of ``PROTOCOLS``; BadInput (a ValueError) otherwise."""
    from ..errors import BadInput

    if not isinstance(protocol, str) or protocol not in PROTOCOLS:
        raise BadInput(f"protocol must be one of {', '.join(PROTOCOLS)}, got {protocol!r}")
    return protocol


def _normalized(answers: list[str], protocol: str) -> bool:
    """Whether the official code normalizes a question with these (several) human answers:
    they are not all the same string (current: once whitespace-cleaned; 2016: as given)."""
    if protocol == "2016":
        return len(set(answers)) > 1
    return len({clean_whitespace(a) for a in answers}) > 1


def ground_truth(answers: list[str], protocol: str = "current") -> list[str]:
    """One question's human answers as the official metric compares them (module docstring).

    The vocabulary and the soft targets are built from ``ground_truth(answers)``.

    >>> ground_truth(["Two"] * 3 + [" 2\\n"] * 7)
    ['2', '2', '2', '2', '2', '2', '2', '2', '2', '2']
    >>> ground_truth(["Yes\\t"] * 10)[0]
    'Yes'
    >>> ground_truth(["Two", "2"], protocol="2016")
    ['Two', '2']
    """
    check_protocol(protocol)
    if len(answers) == 1:
        return [normalize_answer(answers[0])]
    if not _normalized(answers, protocol):
        return list(answers) if protocol == "2016" else [clean_whitespace(a) for a in answers]
    if protocol == "2016":
        return [process_punctuation(a) for a in answers]
    return [normalize_answer(a) for a in answers]


def prediction_as_compared(prediction: str, answers: list[str], protocol: str = "current") -> str:
    """A raw prediction as the official metric compares it with ``ground_truth(answers, protocol)``."""
    check_protocol(protocol)
    if protocol == "2016" or len(answers) == 1 or _normalized(answers, protocol):
        return normalize_answer(prediction)
    return clean_whitespace(prediction)
