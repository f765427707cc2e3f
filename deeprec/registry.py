"""Names -> implementations for models and datasets; one line per entry, imported lazily."""

from __future__ import annotations

import importlib

from deeprec.errors import ConfigError

MODELS = {
    "pop": "deeprec.baselines.pop:Popularity",
    "itemknn": "deeprec.baselines.knn:ItemKNN",
    "userknn": "deeprec.baselines.knn:UserKNN",
    "mf": "deeprec.baselines.mf:ALS",
    "ease": "deeprec.baselines.ease:EASE",
    "ncf": "deeprec.models.ncf:NCF",
    "lstm": "deeprec.models.lstm:LSTMRecommender",
    "autoencoder": "deeprec.models.autoencoder:AutoencoderRecommender",
    "attention": "deeprec.models.attention:AttentionRanker",
    "sasrec": "deeprec.models.sasrec:SASRec",
    "linucb": "deeprec.bandits.recommender:LinUCBRecommender",
}

DATASETS = {
    "synthetic": "deeprec.data.adapters.synthetic:load",
    "events": "deeprec.data.adapters.events:load",
    "interactions": "deeprec.data.adapters.interactions:load",
    "coursera": "deeprec.data.adapters.coursera:load",
    "movielens": "deeprec.data.adapters.movielens:load",
    "epm": "deeprec.data.adapters.epm:load",
}

#: the data names that are event logs: their adapter also has rate(cfg) -> RatingsResult (SPEC section 1)
EVENT_LOGS = ("synthetic", "events", "epm")

BASELINES = ("pop", "itemknn", "userknn", "mf", "ease")
DEEP_MODELS = ("ncf", "lstm", "autoencoder", "attention", "sasrec")


def _resolve(table: dict[str, str], name: str, kind: str):
    if name not in table:
        raise ConfigError(f"unknown {kind} {name!r}; valid {kind}s: {', '.join(sorted(table))}")
    module, attr = table[name].split(":")
    return getattr(importlib.import_module(module), attr)


def model_class(name: str):
    """The Recommender class registered as `name`."""
    return _resolve(MODELS, name, "model")


def dataset_loader(name: str):
    """The loader function registered as `name`: load(cfg) -> InteractionData."""
    return _resolve(DATASETS, name, "data")


def log_rater(name: str):
    """rate(cfg) -> RatingsResult of the event log registered as `name` (one of EVENT_LOGS)."""
    if name not in EVENT_LOGS:
        raise ConfigError(f"data={name!r} is not an event log; choose one of {', '.join(EVENT_LOGS)}")
    return importlib.import_module(DATASETS[name].split(":")[0]).rate
