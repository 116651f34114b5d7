"""Recurrent networks for sequences: SimpleRNN, LSTM and GRU stacks, optionally bidirectional.

* ``sequence_regressor``: a sequence of feature vectors in, one number out. Built for the
  adding problem of Hochreiter & Schmidhuber (1997): each step carries a random value and
  a 0/1 marker, and the target is the sum of the two marked values, so the net must carry
  information across the whole sequence. ``fit`` on such a model is backpropagation
  through time: Keras unrolls the recurrence over the steps and differentiates the
  unrolled net, which is where a SimpleRNN's gradients vanish and an LSTM's do not.
* ``sequence_tagger``: one label per token (part-of-speech style tagging). A bidirectional
  stack sees what comes after each token as well as what came before, which is what
  tags that depend on future context need.
* ``text_classifier``: one label per token sequence, e.g. sentiment of a review; the last
  recurrent layer's final state summarises the text.
* :func:`with_text_vectorizer` puts a ``TextVectorization`` layer in front of a
  classifier, so that the saved ``.keras`` file classifies raw strings;
  :func:`make_text_vectorizer` builds one whose standardisation (:func:`standardize_text`)
  survives invalid UTF-8 and empty texts, and loads back in safe mode.

Token ids follow ``TextVectorization``'s convention: 0 is padding (masked with
``mask_zero=True``, so trailing padding changes nothing), 1 the out-of-vocabulary token;
``vocabulary_size`` counts both, i.e. it is ``vectorizer.vocabulary_size()``.

Recurrent layers are named ``recurrent_1``, ``recurrent_2``, ... so gradient-norm records
read ``recurrent_1/kernel`` and ``recurrent_1/recurrent_kernel`` (bidirectional:
``recurrent_1/forward_<cell>_1/...`` and ``recurrent_1/backward_<cell>_1/...``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import keras
import tensorflow as tf

from models.registry import register_model

CELLS = {"rnn": keras.layers.SimpleRNN, "lstm": keras.layers.LSTM, "gru": keras.layers.GRU}
# TextVectorization's "lower_and_strip_punctuation" pattern, so a vectorizer built with
# standardize_text splits text into the same words as the Keras default does.
PUNCTUATION = r'[!"#$%&()\*\+,-\./:;<=>?@\[\\\]^_`{|}~\']'
# TextVectorization's default out-of-vocabulary token: its lookup maps it to id 1 and an
# adapted vocabulary never contains it as a word.
OOV_TOKEN = "[UNK]"
# The characters tf.strings.split treats as whitespace (RE2's \s lacks \v).
_BLANK = r"^[ \t\n\v\f\r]*$"


def _check_positive(**values: Any) -> None:
    for argument, value in values.items():
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{argument}={value!r}: must be an integer >= 1")


def _check_recurrent_arguments(cell: str, units: int, layers: int) -> None:
    if cell not in CELLS:
        raise ValueError(f"cell={cell!r}: expected one of {', '.join(CELLS)}")
    _check_positive(units=units, layers=layers)


def _check_sequence_length(sequence_length: int | None) -> None:
    if sequence_length is not None:
        _check_positive(sequence_length=sequence_length)


def _recurrent_stack(x: keras.KerasTensor, cell: str, units: int, layers: int, bidirectional: bool,
                     last_returns_sequences: bool) -> keras.KerasTensor:
    """``layers`` recurrent layers; every one but the last hands its whole sequence on."""
    for index in range(1, layers + 1):
        return_sequences = index < layers or last_returns_sequences
        if bidirectional:
            inner = CELLS[cell](units, return_sequences=return_sequences, name=f"{cell}_{index}")
            layer = keras.layers.Bidirectional(inner, merge_mode="concat", name=f"recurrent_{index}")
        else:
            layer = CELLS[cell](units, return_sequences=return_sequences, name=f"recurrent_{index}")
        x = layer(x)
    return x


def _token_embedding(sequence_length: int | None, vocabulary_size: int, embedding_dim: int
                     ) -> tuple[keras.KerasTensor, keras.KerasTensor]:
    if isinstance(vocabulary_size, bool) or not isinstance(vocabulary_size, int) or vocabulary_size < 2:
        raise ValueError(f"vocabulary_size={vocabulary_size!r}: must be an integer >= 2 (padding 0 and at least "
                         "one token)")
    _check_sequence_length(sequence_length)
    _check_positive(embedding_dim=embedding_dim)
    inputs = keras.Input(shape=(sequence_length,), dtype="int32", name="tokens")
    embedded = keras.layers.Embedding(vocabulary_size, embedding_dim, mask_zero=True, name="embedding")(inputs)
    return inputs, embedded


@register_model("sequence_regressor")
def build_sequence_regressor(
    input_shape: Sequence[int | None],
    cell: str = "lstm",
    units: int = 64,
    layers: int = 1,
    bidirectional: bool = False,
    truncation: int | None = None,
    name: str = "sequence_regressor",
) -> keras.Model:
    """Sequences of shape ``(steps, features)`` (``steps`` may be None) to one linear output.

    For the adding problem: ``input_shape=(T, 2)`` (value, marker) and a mean-squared-error
    loss; always guessing the mean (1.0) scores about 0.167, which is the bar to beat.

    ``truncation=k`` is truncated backpropagation through time: the one recurrent layer
    reads the sequence in chunks of k steps, each starting from the state the previous
    chunk ended in (the forward pass is unchanged), with the gradient stopped at every
    chunk boundary, so no gradient flows back more than k steps.
    """
    _check_recurrent_arguments(cell, units, layers)
    shape = tuple(input_shape)
    if len(shape) != 2 or (shape[0] is not None and shape[0] < 1) or shape[1] is None or shape[1] < 1:
        raise ValueError(f"input_shape={shape}: expected (steps, features), steps None or >= 1, features >= 1")
    inputs = keras.Input(shape=shape, name="sequence")
    if truncation is not None:
        _check_positive(truncation=truncation)
        if bidirectional or layers != 1 or shape[0] is None:
            raise ValueError(f"truncation={truncation}: needs one unidirectional layer and a known number of "
                             f"steps (got bidirectional={bidirectional}, layers={layers}, steps={shape[0]})")
    if truncation is not None and truncation < shape[0]:
        recurrent = CELLS[cell](units, return_state=True, name="recurrent_1")
        states = None
        # Chunks end at the last step, so the gradient of the final output reaches k steps back.
        edges = sorted({0, *range(shape[0], 0, -truncation)})
        for start, end in zip(edges[:-1], edges[1:], strict=True):
            x, *states = recurrent(inputs[:, start:end], initial_state=states)
            states = [keras.ops.stop_gradient(state) for state in states]
    else:
        x = _recurrent_stack(inputs, cell, units, layers, bidirectional, last_returns_sequences=False)
    # float32 output keeps the loss exact under a mixed-precision policy.
    outputs = keras.layers.Dense(1, dtype="float32", name="output")(x)
    return keras.Model(inputs, outputs, name=name)


@register_model("sequence_tagger")
def build_sequence_tagger(
    vocabulary_size: int,
    num_classes: int,
    sequence_length: int | None = None,
    cell: str = "lstm",
    units: int = 64,
    layers: int = 1,
    bidirectional: bool = False,
    embedding_dim: int = 16,
    name: str = "sequence_tagger",
) -> keras.Model:
    """Token ids ``(steps,)`` to per-step class probabilities ``(steps, num_classes)``.

    The padding mask travels to the output, so Keras' losses and metrics skip padded
    steps. A unidirectional tagger labels each token from its past only; with
    ``bidirectional=True`` every label also depends on the tokens after it. On a GPU, keep
    at least one real token per row: cuDNN refuses fully padded rows.
    """
    _check_recurrent_arguments(cell, units, layers)
    _check_positive(num_classes=num_classes)
    inputs, x = _token_embedding(sequence_length, vocabulary_size, embedding_dim)
    x = _recurrent_stack(x, cell, units, layers, bidirectional, last_returns_sequences=True)
    # A Dense layer on a rank-3 tensor acts on each step with shared weights.
    outputs = keras.layers.Dense(num_classes, activation="softmax", dtype="float32", name="probabilities")(x)
    return keras.Model(inputs, outputs, name=name)


@register_model("text_classifier")
def build_text_classifier(
    vocabulary_size: int,
    num_classes: int = 2,
    sequence_length: int | None = None,
    cell: str = "lstm",
    units: int = 64,
    layers: int = 1,
    bidirectional: bool = True,
    embedding_dim: int = 64,
    dropout_rate: float = 0.3,
    name: str = "text_classifier",
) -> keras.Model:
    """Token ids ``(steps,)`` to ``num_classes`` (>= 2) softmax probabilities, e.g. sentiment.

    Masking makes trailing padding irrelevant: the last recurrent layer returns its state
    after the last real token. A row that is all padding gives the RNN's initial (zero)
    state, hence a finite, input-independent prediction on CPU; cuDNN on a GPU refuses such
    rows, which is why :func:`standardize_text` turns a text without words into one
    out-of-vocabulary token.
    """
    _check_recurrent_arguments(cell, units, layers)
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 2:
        raise ValueError(f"num_classes={num_classes!r}: must be an integer >= 2")
    if not 0.0 <= dropout_rate < 1.0:
        raise ValueError(f"dropout_rate={dropout_rate}: must be in [0, 1)")
    inputs, x = _token_embedding(sequence_length, vocabulary_size, embedding_dim)
    x = _recurrent_stack(x, cell, units, layers, bidirectional, last_returns_sequences=False)
    if dropout_rate:
        x = keras.layers.Dropout(dropout_rate, name="dropout")(x)
    outputs = keras.layers.Dense(num_classes, activation="softmax", dtype="float32", name="probabilities")(x)
    return keras.Model(inputs, outputs, name=name)


@keras.saving.register_keras_serializable(package="nnzoo")
def standardize_text(text: tf.Tensor) -> tf.Tensor:
    """Lower-case, strip punctuation, and never fail or yield no token.

    Invalid UTF-8 is repaired first (bad bytes become U+FFFD): the default standardisation
    lets such bytes into an adapted vocabulary, and then ``get_vocabulary()`` and saving
    fail with a ``UnicodeDecodeError``. Lower-casing is Unicode-aware ("CAFÉ" -> "café"),
    where the default only lowers ASCII. A text left without words (empty, blank, only
    punctuation) becomes the out-of-vocabulary token, so every row holds at least one
    real token (see :func:`build_text_classifier` for why).

    Registered, so a ``TextVectorization`` using it saves and loads with ``safe_mode=True``
    once this module is imported.
    """
    # The UTF-8-aware lower-casing below would also replace bad bytes, but repairing first
    # keeps this function safe if the lower-casing ever goes back to the byte-wise default.
    text = tf.strings.unicode_transcode(text, "UTF-8", "UTF-8", errors="replace")
    text = tf.strings.lower(text, encoding="utf-8")
    text = tf.strings.regex_replace(text, PUNCTUATION, "")
    return tf.strings.regex_replace(text, _BLANK, OOV_TOKEN)


def make_text_vectorizer(max_tokens: int, sequence_length: int) -> keras.layers.TextVectorization:
    """A ``TextVectorization`` (to ``adapt`` on training texts) giving ``sequence_length`` ids per text.

    Longer texts are truncated, shorter ones padded with 0. Its ``vocabulary_size()`` is at
    most ``max_tokens`` (padding and OOV included): pass it as the classifier's
    ``vocabulary_size``.
    """
    _check_positive(sequence_length=sequence_length)
    if isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or max_tokens < 3:
        raise ValueError(f"max_tokens={max_tokens!r}: must be an integer >= 3 (padding, OOV and one word)")
    return keras.layers.TextVectorization(max_tokens=max_tokens, standardize=standardize_text, output_mode="int",
                                          output_sequence_length=sequence_length, name="vectorizer")


def with_text_vectorizer(vectorizer: keras.layers.TextVectorization, classifier: keras.Model,
                         name: str = "raw_text_classifier") -> keras.Model:
    """A model from a batch of raw strings, shape ``(batch,)``, to ``classifier``'s probabilities.

    It shares ``classifier``'s weights and saves as one ``.keras`` file that classifies raw
    text; import this module before ``keras.saving.load_model`` so :func:`standardize_text`
    is registered. Keras 3.15's ``predict``/``fit`` refuse NumPy string arrays: give them
    ``tf.constant(texts)`` or a ``tf.data.Dataset`` (calling the model directly takes either).
    """
    if not isinstance(vectorizer, keras.layers.TextVectorization):
        raise ValueError(f"vectorizer={vectorizer!r}: expected a keras.layers.TextVectorization")
    config = vectorizer.get_config()
    if config["output_mode"] != "int":
        raise ValueError(f"vectorizer output_mode={config['output_mode']!r}: expected 'int' (token ids)")
    if len(classifier.inputs) != 1:
        raise ValueError(f"classifier {classifier.name!r} has {len(classifier.inputs)} inputs: expected one")
    shape = tuple(classifier.inputs[0].shape)
    if len(shape) != 2 or shape[1] not in (None, config["output_sequence_length"]):
        raise ValueError(f"vectorizer output_sequence_length={config['output_sequence_length']} does not fit "
                         f"classifier input shape {shape}: expected (None, steps) with steps None or equal")
    # Ids past the embedding table fail on CPU and silently read zeros on GPU: refuse them here.
    embedding = next((layer for layer in classifier.layers if isinstance(layer, keras.layers.Embedding)), None)
    if embedding is not None and vectorizer.vocabulary_size() > embedding.input_dim:
        raise ValueError(f"vectorizer vocabulary_size()={vectorizer.vocabulary_size()} exceeds the classifier's "
                         f"embedding input_dim={embedding.input_dim}")
    # Shape () rather than (1,): a batch of strings is then a plain 1-D tensor, which is
    # what tf.data yields for a dataset of texts (TextVectorization accepts both).
    inputs = keras.Input(shape=(), dtype="string", name="text")
    outputs = classifier(vectorizer(inputs))
    return keras.Model(inputs, outputs, name=name)
