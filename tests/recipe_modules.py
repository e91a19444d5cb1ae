"""Lightning modules for tests that build them directly: the shipped recipe's arguments
(``training.config.config_arguments``) with a test's own changes, never a copy of the numbers."""

from __future__ import annotations

import functools

from training.config import config_arguments
from training import FinetuneModule, MAEPretrainModule


@functools.cache
def _recipe(config_name: str) -> dict:
    args = config_arguments(config_name, "module")
    del args["_target_"]
    return args


def _arguments(config_name: str, model_name: str, model_kwargs: dict, changes: dict) -> dict:
    args = dict(_recipe(config_name), model_name=model_name, model_kwargs=dict(model_kwargs))
    if "blr" in changes and "lr" not in changes:  # one of the two: giving blr replaces the recipe's lr
        args["lr"] = None
    if "lr" in changes and "blr" not in changes:
        args["blr"] = None
    args.update(changes)
    return args


def pretrain_module(model_name: str, model_kwargs: dict, **changes) -> MAEPretrainModule:
    return MAEPretrainModule(**_arguments("train", model_name, model_kwargs, changes))


def finetune_module(model_name: str, model_kwargs: dict, **changes) -> FinetuneModule:
    return FinetuneModule(**_arguments("finetune", model_name, model_kwargs, changes))
