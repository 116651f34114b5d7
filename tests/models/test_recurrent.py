"""The sequences family: recurrent regressor, tagger, text classifier and the raw-text wrapper."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import keras
import numpy as np
import pytest
import tensorflow as tf

from models import build_model, model_names
from models.recurrent import make_text_vectorizer, standardize_text, with_text_vectorizer

VOCABULARY = 20
TINY = {"units": 3}
TOKEN_KWARGS = {"vocabulary_size": VOCABULARY, "embedding_dim": 3, **TINY}
LAYER_CLASS = {"rnn": "SimpleRNN", "lstm": "LSTM", "gru": "GRU"}


def _tokens(rng: np.random.Generator, batch: int = 6, steps: int = 5) -> np.ndarray:
    """Random ids with trailing padding of varying length (at least one real token per row)."""
    tokens = rng.integers(1, VOCABULARY, size=(batch, steps)).astype("int32")
    for row, length in enumerate(rng.integers(1, steps + 1, size=batch)):
        tokens[row, length:] = 0
    return tokens


def _case(name: str, rng: np.random.Generator) -> tuple[dict[str, Any], np.ndarray, np.ndarray, tuple, str]:
    """Builder keyword arguments, inputs, targets, expected output shape and loss for ``name``."""
    if name == "sequence_regressor":
        x = rng.random((6, 7, 2), dtype=np.float32)
        return {"input_shape": (None, 2), **TINY}, x, x[..., 0].sum(axis=1, keepdims=True), (6, 1), "mse"
    tokens = _tokens(rng)
    if name == "sequence_tagger":
        return ({"num_classes": 4, **TOKEN_KWARGS}, tokens, tokens % 4, (6, 5, 4),
                "sparse_categorical_crossentropy")
    return ({"num_classes": 3, "dropout_rate": 0.2, **TOKEN_KWARGS}, tokens, np.arange(6) % 3, (6, 3),
            "sparse_categorical_crossentropy")


def _round_trip(model: keras.Model, tmp_path: Path) -> keras.Model:
    path = tmp_path / f"{model.name}.keras"
    keras.saving.save_model(model, path)
    loaded = keras.saving.load_model(path, safe_mode=True)
    assert [layer.name for layer in loaded.layers] == [layer.name for layer in model.layers]
    return loaded


@pytest.mark.parametrize("name, options", [
    ("sequence_regressor", {"cell": "lstm", "layers": 2}),
    ("sequence_regressor", {"cell": "rnn", "bidirectional": True}),
    ("sequence_tagger", {"cell": "gru", "layers": 2, "bidirectional": True}),
    ("text_classifier", {"cell": "lstm", "layers": 2}),
    ("text_classifier", {"cell": "rnn", "bidirectional": True}),
])
def test_builder_output_train_step_and_safe_mode_round_trip(name, options, tmp_path):
    kwargs, x, y, shape, loss = _case(name, np.random.default_rng(0))
    model = build_model(name, **kwargs, **options)
    assert model.output_shape == (None, *(None,) * (len(shape) - 2), shape[-1])  # steps stay unknown
    outputs = model.predict(x, verbose=0)
    assert outputs.shape == shape and outputs.dtype == np.float32 and np.all(np.isfinite(outputs))
    if loss != "mse":
        np.testing.assert_allclose(outputs.sum(axis=-1), 1.0, rtol=1e-5)

    before = [weight.copy() for weight in model.get_weights()]
    model.compile(optimizer=keras.optimizers.Adam(1e-2), loss=loss)
    assert np.isfinite(float(np.asarray(model.train_on_batch(x, y)).ravel()[0]))
    changed = [not np.array_equal(a, b) for a, b in zip(before, model.get_weights(), strict=True)]
    assert all(changed), f"{name}: some weights did not change in one train step: {changed}"

    expected = model.predict(x, verbose=0)
    np.testing.assert_array_equal(_round_trip(model, tmp_path).predict(x, verbose=0), expected)


@pytest.mark.parametrize("name", ["sequence_regressor", "sequence_tagger", "text_classifier"])
def test_outputs_stay_float32_under_mixed_precision(name):
    kwargs, x, *_ = _case(name, np.random.default_rng(0))
    keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        model = build_model(name, **kwargs)
    finally:
        keras.mixed_precision.set_global_policy("float32")
    assert model.get_layer("recurrent_1").compute_dtype == "float16"
    assert model.output.dtype == "float32" and model.predict(x, verbose=0).dtype == np.float32


def test_the_family_is_registered():
    assert {"sequence_regressor", "sequence_tagger", "text_classifier"} <= set(model_names())


@pytest.mark.parametrize("cell", ["rnn", "lstm", "gru"])
@pytest.mark.parametrize("name", ["sequence_regressor", "sequence_tagger", "text_classifier"])
def test_cell_choice_sets_the_layer_class_and_bidirectional_wraps_and_doubles_it(name, cell):
    kwargs, *_ = _case(name, np.random.default_rng(0))
    plain = build_model(name, **kwargs, cell=cell, layers=2, bidirectional=False)
    both = build_model(name, **kwargs, cell=cell, layers=2, bidirectional=True)
    for index in (1, 2):
        layer = plain.get_layer(f"recurrent_{index}")
        wrapper = both.get_layer(f"recurrent_{index}")
        assert type(layer).__name__ == LAYER_CLASS[cell]
        assert type(wrapper).__name__ == "Bidirectional" and wrapper.merge_mode == "concat"
        assert type(wrapper.forward_layer).__name__ == type(wrapper.backward_layer).__name__ == LAYER_CLASS[cell]
        assert layer.output.shape[-1] == TINY["units"]
        assert wrapper.output.shape[-1] == 2 * TINY["units"]
    # all but the last layer hand on sequences (the tagger's last one too)
    assert len(plain.get_layer("recurrent_1").output.shape) == 3
    assert len(plain.get_layer("recurrent_2").output.shape) == (3 if name == "sequence_tagger" else 2)


@pytest.mark.parametrize("bidirectional", [False, True])
@pytest.mark.parametrize("cell", ["rnn", "lstm", "gru"])
def test_trailing_padding_does_not_change_the_text_classifier(cell, bidirectional):
    model = build_model("text_classifier", **TOKEN_KWARGS, cell=cell, bidirectional=bidirectional, layers=2)
    short = model.predict(np.array([[5, 3, 7]], dtype="int32"), verbose=0)
    padded = model.predict(np.array([[5, 3, 7, 0, 0, 0]], dtype="int32"), verbose=0)
    np.testing.assert_allclose(padded, short, rtol=1e-6, atol=1e-7)
    # the comparison can fail: a different real token does change the prediction
    assert not np.allclose(model.predict(np.array([[5, 3, 8]], dtype="int32"), verbose=0), short, rtol=0, atol=1e-7)


@pytest.mark.parametrize("bidirectional", [False, True])
def test_trailing_padding_does_not_change_the_tags_of_real_tokens(bidirectional):
    model = build_model("sequence_tagger", num_classes=4, **TOKEN_KWARGS, bidirectional=bidirectional)
    short = model.predict(np.array([[5, 3, 7]], dtype="int32"), verbose=0)
    padded = model.predict(np.array([[5, 3, 7, 0, 0, 0]], dtype="int32"), verbose=0)
    assert padded.shape == (1, 6, 4)
    np.testing.assert_allclose(padded[:, :3], short, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("bidirectional", [False, True])
def test_only_a_bidirectional_tagger_sees_future_tokens(bidirectional):
    model = build_model("sequence_tagger", num_classes=4, **TOKEN_KWARGS, bidirectional=bidirectional)
    first = model.predict(np.array([[5, 3, 7], [5, 3, 8]], dtype="int32"), verbose=0)
    # changing the last token changes the first two tags only when the net reads backwards too
    assert np.allclose(first[0, :2], first[1, :2], rtol=0, atol=1e-7) is not bidirectional
    assert not np.allclose(first[0, 2], first[1, 2], rtol=0, atol=1e-7)


def test_tagger_loss_ignores_labels_at_padded_steps():
    model = build_model("sequence_tagger", num_classes=4, **TOKEN_KWARGS)
    model.compile(loss="sparse_categorical_crossentropy")
    tokens = np.array([[5, 3, 7, 0, 0], [2, 9, 0, 0, 0]], dtype="int32")
    labels = np.array([[1, 2, 3, 0, 0], [3, 1, 0, 0, 0]])
    other = np.where(tokens == 0, 2, labels)
    assert model.evaluate(tokens, labels, verbose=0) == pytest.approx(model.evaluate(tokens, other, verbose=0))
    assert model.evaluate(tokens, labels, verbose=0) != pytest.approx(
        model.evaluate(tokens, np.where(tokens == 0, 0, (labels + 1) % 4), verbose=0))


@pytest.mark.parametrize("name, kwargs, message", [
    ("sequence_regressor", {"cell": "transformer"}, "cell='transformer'"),
    ("sequence_regressor", {"units": 0}, "units=0"),
    ("sequence_regressor", {"layers": 0}, "layers=0"),
    ("sequence_regressor", {"input_shape": (8,)}, r"input_shape=\(8,\)"),
    ("sequence_regressor", {"input_shape": (8, 0)}, r"input_shape=\(8, 0\)"),
    ("sequence_tagger", {"vocabulary_size": 1}, "vocabulary_size=1"),
    ("sequence_tagger", {"num_classes": 0}, "num_classes=0"),
    ("sequence_tagger", {"embedding_dim": 0}, "embedding_dim=0"),
    ("sequence_tagger", {"sequence_length": 0}, "sequence_length=0"),
    ("sequence_tagger", {"cell": "LSTM"}, "cell='LSTM'"),
    ("text_classifier", {"num_classes": 1}, "num_classes=1"),
    ("text_classifier", {"dropout_rate": 1.0}, "dropout_rate=1.0"),
    ("text_classifier", {"dropout_rate": -0.1}, "dropout_rate=-0.1"),
    ("text_classifier", {"units": 2.5}, "units=2.5"),
    ("text_classifier", {"vocabulary_size": 0}, "vocabulary_size=0"),
])
def test_bad_arguments_raise_value_error_naming_the_argument(name, kwargs, message):
    base, *_ = _case(name, np.random.default_rng(0))
    with pytest.raises(ValueError, match=message):
        build_model(name, **{**base, **kwargs})


# --- raw text in, probabilities out ------------------------------------------------------

CORPUS = ["a great film", "a terrible film", "great acting, great story", "Terrible plot!",
          "what a wonderful CAFÉ scene", "boring and terrible"]
SEQUENCE_LENGTH = 6
# empty, blank, punctuation only, longer than SEQUENCE_LENGTH, invalid UTF-8, mixed case
TRICKY = ["", "   ", "?!", " ".join(["great"] * 40) + " terrible", b"caf\xe9 great", "GREAT Film"]


@pytest.fixture(scope="module")
def raw_text() -> tuple[keras.layers.TextVectorization, keras.Model, keras.Model]:
    keras.utils.set_random_seed(0)
    vectorizer = make_text_vectorizer(max_tokens=30, sequence_length=SEQUENCE_LENGTH)
    vectorizer.adapt(tf.constant(CORPUS))
    classifier = build_model("text_classifier", vocabulary_size=vectorizer.vocabulary_size(), units=4,
                             embedding_dim=4, sequence_length=SEQUENCE_LENGTH)
    # a few steps so the predictions depend on the words, not only on the biases
    classifier.compile(optimizer=keras.optimizers.Adam(5e-2), loss="sparse_categorical_crossentropy")
    classifier.fit(vectorizer(tf.constant(CORPUS)), np.array([1, 0, 1, 0, 1, 0]), epochs=3, verbose=0)
    return vectorizer, classifier, with_text_vectorizer(vectorizer, classifier)


def test_raw_text_model_predicts_what_the_classifier_gives_on_the_vectorized_text(raw_text):
    vectorizer, classifier, model = raw_text
    assert model.input_shape == (None,) and model.output_shape == (None, 2)
    texts = tf.constant(CORPUS + TRICKY)
    expected = classifier.predict(vectorizer(texts), verbose=0)
    np.testing.assert_allclose(model.predict(texts, verbose=0), expected, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(model(np.array(CORPUS + TRICKY, dtype=object)), expected, rtol=1e-6, atol=1e-7)
    assert not np.allclose(expected[0], expected[1], rtol=0, atol=1e-4)  # the text matters


def test_raw_text_model_round_trips_in_safe_mode_and_handles_awkward_strings(raw_text, tmp_path):
    _, _, model = raw_text
    texts = tf.constant(CORPUS + TRICKY)
    expected = model.predict(texts, verbose=0)
    loaded = _round_trip(model, tmp_path)
    got = loaded.predict(texts, verbose=0)
    np.testing.assert_array_equal(got, expected)
    tricky = got[len(CORPUS):]
    assert np.all(np.isfinite(tricky))
    np.testing.assert_allclose(tricky.sum(axis=1), 1.0, rtol=1e-5)


def test_vectorizer_truncates_repairs_and_never_yields_an_empty_row(raw_text):
    vectorizer, _, _ = raw_text
    ids = vectorizer(tf.constant(TRICKY)).numpy()
    assert ids.shape == (len(TRICKY), SEQUENCE_LENGTH)
    # a text without words is one out-of-vocabulary token, so no row is all padding
    np.testing.assert_array_equal(ids[:3], [[1, 0, 0, 0, 0, 0]] * 3)
    great = vectorizer.get_vocabulary().index("great")
    np.testing.assert_array_equal(ids[3], [great] * SEQUENCE_LENGTH)  # truncated before "terrible"
    assert ids[4, 0] == 1 and ids[4, 1] == great  # "caf\ufffd" is unknown, "great" is read
    assert ids[5, 0] == great  # lower-cased
    assert vectorizer(tf.constant(["CAFÉ"])).numpy()[0, 0] == vectorizer.get_vocabulary().index("café")


def test_standardize_text_repairs_utf8_so_an_adapted_vocabulary_saves(tmp_path):
    assert standardize_text(tf.constant([b"Caf\xe9, GREAT!"])).numpy()[0].decode() == "caf\ufffd great"
    vectorizer = make_text_vectorizer(max_tokens=10, sequence_length=3)
    vectorizer.adapt(tf.constant([b"caf\xe9 great", b"\xff\xfe"]))
    assert "caf\ufffd" in vectorizer.get_vocabulary()
    inputs = keras.Input(shape=(), dtype="string")
    model = keras.Model(inputs, vectorizer(inputs))
    texts = tf.constant([b"caf\xe9 great", b"", b"great"])
    np.testing.assert_array_equal(_round_trip(model, tmp_path).predict(texts, verbose=0),
                                  model.predict(texts, verbose=0))


def test_with_text_vectorizer_refuses_mismatched_parts(raw_text):
    vectorizer, classifier, _ = raw_text
    small = build_model("text_classifier", vocabulary_size=3, units=2, embedding_dim=2)
    with pytest.raises(ValueError, match="vocabulary_size"):
        with_text_vectorizer(vectorizer, small)
    other_length = build_model("text_classifier", vocabulary_size=vectorizer.vocabulary_size(), units=2,
                               embedding_dim=2, sequence_length=SEQUENCE_LENGTH + 1)
    with pytest.raises(ValueError, match="output_sequence_length=6"):
        with_text_vectorizer(vectorizer, other_length)
    with pytest.raises(ValueError, match="TextVectorization"):
        with_text_vectorizer(keras.layers.Dense(2), classifier)
    with pytest.raises(ValueError, match="max_tokens=2"):
        make_text_vectorizer(max_tokens=2, sequence_length=4)


@pytest.mark.parametrize("cell", ["rnn", "lstm", "gru"])
def test_truncated_backpropagation_keeps_the_forward_pass_and_cuts_the_gradient_after_k_steps(cell, tmp_path):
    import tensorflow as tf

    x = np.random.default_rng(0).random((5, 10, 2)).astype("float32")
    truncated = build_model("sequence_regressor", input_shape=(10, 2), cell=cell, units=4, truncation=3)
    full = build_model("sequence_regressor", input_shape=(10, 2), cell=cell, units=4)
    full.set_weights(truncated.get_weights())
    np.testing.assert_allclose(truncated(x), full(x), rtol=1e-5, atol=1e-6)
    inputs = tf.constant(x)
    with tf.GradientTape() as tape:
        tape.watch(inputs)
        output = tf.reduce_sum(truncated(inputs))
    per_step = np.linalg.norm(tape.gradient(output, inputs).numpy(), axis=(0, 2))
    assert np.all(per_step[:7] == 0) and np.all(per_step[7:] > 0)
    path = tmp_path / "truncated.keras"
    truncated.save(path)
    np.testing.assert_allclose(keras.saving.load_model(path, safe_mode=True)(x), truncated(x), rtol=1e-6)


def test_truncation_refuses_what_it_cannot_do():
    with pytest.raises(ValueError, match="truncation=3: needs one unidirectional layer"):
        build_model("sequence_regressor", input_shape=(10, 2), bidirectional=True, truncation=3)
    with pytest.raises(ValueError, match="truncation=0"):
        build_model("sequence_regressor", input_shape=(10, 2), truncation=0)
