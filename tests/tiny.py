"""Tiny random models (BERT, RoBERTa, DistilBERT) built in memory, with a small tokenizer, for fast unit tests."""
from __future__ import annotations

import torch
from torch import nn

from tp_core.model import ClassificationHead, MultiTaskModel, TaskHeadInfo, minilm_path

FAMILIES = ("bert", "roberta", "distilbert")
TASKS = (TaskHeadInfo("sst2", ("negative", "positive")), TaskHeadInfo("ag_news", ("World", "Sports", "Business", "Sci/Tech")))


def tiny_config(family: str, vocab: int):
    from transformers import BertConfig, DistilBertConfig, RobertaConfig

    if family == "bert":
        return BertConfig(vocab_size=vocab, hidden_size=32, num_hidden_layers=3, num_attention_heads=4,
                          intermediate_size=48, max_position_embeddings=160)
    if family == "roberta":
        return RobertaConfig(vocab_size=vocab, hidden_size=32, num_hidden_layers=3, num_attention_heads=4,
                             intermediate_size=48, max_position_embeddings=160, pad_token_id=0)
    if family == "distilbert":
        return DistilBertConfig(vocab_size=vocab, dim=32, n_layers=3, n_heads=4, hidden_dim=48,
                                max_position_embeddings=160)
    raise ValueError(family)


def tokenizer():
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(minilm_path()))


def tiny_multitask(family: str = "bert", seed: int = 0, kind: str = "multitask") -> MultiTaskModel:
    from transformers import AutoModel, AutoModelForSequenceClassification

    torch.manual_seed(seed)
    tok = tokenizer()
    cfg = tiny_config(family, tok.vocab_size)
    if kind == "hf_classifier":
        cfg.num_labels = 2
        cfg.id2label = {0: "negative", 1: "positive"}
        cfg.label2id = {"negative": 0, "positive": 1}
        enc = AutoModelForSequenceClassification.from_config(cfg)
        model = MultiTaskModel(enc, tok, {"sst2": TASKS[0]}, kind="hf_classifier", source=f"tiny-{family}-cls")
    else:
        enc = AutoModel.from_config(cfg)
        heads = nn.ModuleDict({t.name: ClassificationHead(32, t.num_labels) for t in TASKS})
        model = MultiTaskModel(enc, tok, {t.name: t for t in TASKS}, heads, source=f"tiny-{family}")
    # make units differ clearly from each other so rankings are meaningful
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(3.0)
    return model.eval()
