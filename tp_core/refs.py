"""What a job refers to instead of carrying it: a model (`ModelRef`) or a bundle split (`DataRef`) that a worker
loads by itself, and the worker process's caches of them (`get_model`, `get_data`; `register_model` makes an
in-memory model available to in-process workers). `data_identity` is the part of a job's content key that names
its data.
"""
from __future__ import annotations

import json
import threading
from collections import OrderedDict
from dataclasses import dataclass

from .curves import data_key
from .data import TaskData, load_split
from .decoder import PromptTask, prompt_view, prompts_key
from .errors import TPError


@dataclass(frozen=True)
class ModelRef:
    """A model a worker can load by itself: `spec` as `load_model` takes it; `fingerprint` keys the caches;
    `prompts` (a causal LM's prompts, decoder.prompts_key) puts them in every job key and into the worker's copy."""

    spec: str
    trust_remote_code: bool = False
    fingerprint: str = ""
    prompts: str = ""


@dataclass(frozen=True)
class DataRef:
    """A bundle split a worker loads by itself (a seeded subset of `limit` examples)."""

    task: str
    split: str = "validation"
    limit: int | None = None
    seed: int = 0


_MODELS: OrderedDict = OrderedDict()
_MODELS_LOCK = threading.Lock()
_VIEWS: OrderedDict = OrderedDict()  # (id of a worker's model copy, prompts JSON) -> (that copy, its prompt view)
_LOCAL: dict[str, object] = {}  # models registered in-process (tests with tiny models, in-process clusters)


def register_model(spec: str, model) -> ModelRef:
    """Make an in-memory model available to in-process workers under `spec` (tests, notebooks)."""
    _LOCAL[spec] = model
    return ModelRef(spec, False, model.fingerprint(), prompts_key(model))


def model_ref(model, trust_remote_code: bool = False, spec: str | None = None, tasks=()) -> ModelRef:
    """The ref of `model` (as `spec`, default its source). A causal LM's ref carries its prompts: with `tasks`,
    only theirs (each resolved first), so that a job's key stays the same when other tasks get a prompt."""
    return ModelRef(spec or str(model.source), bool(trust_remote_code), model.fingerprint(),
                    prompts_key(model, list(tasks) or None))


def get_model(ref: ModelRef):
    """The worker's copy of the model (loaded once per worker process, up to 3 kept), asking the ref's prompts
    through a view of it (decoder.prompt_view, up to 16 kept): two jobs with different prompts for one task can
    run at once. In-process engines run the registered model object itself (its prompts are the caller's)."""
    model = _get_model(ref)
    if not ref.prompts or ref.spec in _LOCAL:  # a registered model is the caller's own object: left as it is
        return model
    key = (id(model), ref.prompts)
    with _MODELS_LOCK:
        view = _VIEWS.get(key)
        if view is not None and view[0] is model:
            _VIEWS.move_to_end(key)
            return view[1]
    prompts = {task: PromptTask.from_dict(d) for task, d in json.loads(ref.prompts).items()}
    view = prompt_view(model, prompts)
    with _MODELS_LOCK:
        _VIEWS[key] = (model, view)
        while len(_VIEWS) > 16:
            _VIEWS.popitem(last=False)
    return view


def loaded_model(spec: str, trust_remote_code: bool = False):
    """The model this process's workers hold for `spec` (loaded by `get_model`), or None."""
    with _MODELS_LOCK:
        return _MODELS.get((spec, bool(trust_remote_code)))


def _get_model(ref: ModelRef):
    if ref.spec in _LOCAL:
        return _LOCAL[ref.spec]
    key = (ref.spec, ref.trust_remote_code)
    with _MODELS_LOCK:
        if key in _MODELS:
            model = _MODELS[key]
            if not ref.fingerprint or model.fingerprint() == ref.fingerprint:
                _MODELS.move_to_end(key)
                return model
            _MODELS.pop(key)
        from .model import load_model

        model = load_model(ref.spec, trust_remote_code=ref.trust_remote_code)
        if ref.fingerprint and model.fingerprint() != ref.fingerprint:
            raise TPError(f"The model {ref.spec} changed on disk since the request was made; reload it.")
        _MODELS[key] = model
        while len(_MODELS) > 3:
            _MODELS.popitem(last=False)
        return model


_DATA: OrderedDict = OrderedDict()
_DATA_LOCK = threading.Lock()


def get_data(ref: DataRef | TaskData | None) -> TaskData | None:
    if ref is None or isinstance(ref, TaskData):
        return ref
    with _DATA_LOCK:
        if ref in _DATA:
            _DATA.move_to_end(ref)
            return _DATA[ref]
    data = load_split(ref.task, ref.split, limit=ref.limit, seed=ref.seed)
    with _DATA_LOCK:
        _DATA[ref] = data
        while len(_DATA) > 64:
            _DATA.popitem(last=False)
    return data


def data_identity(ref: DataRef | TaskData | None) -> str:
    if ref is None or isinstance(ref, DataRef):
        return repr(ref)
    return "upload:" + data_key(ref)
