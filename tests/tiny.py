"""Tiny random models (BERT, RoBERTa, DistilBERT) built in memory, with a small tokenizer, for fast unit tests."""
from __future__ import annotations

import functools

import torch
from torch import nn

from tp_core.model import ClassificationHead, MultiTaskModel, TaskHeadInfo, minilm_path

FAMILIES = ("bert", "roberta", "distilbert")
TASKS = (TaskHeadInfo("sst2", ("negative", "positive")),
         TaskHeadInfo("ag_news", ("World", "Sports", "Business", "Sci/Tech")))


def assert_ffn_ig_equals_captum(model: MultiTaskModel, task: str, data, cfg) -> None:
    """Per layer, the ig fast path's FFN scores equal Captum's LayerIntegratedGradients run directly at 1e-4."""
    import numpy as np

    from tp_core.attribution import attribute, captum_reference_ffn_ig

    ours = attribute(model, task, cfg, data=data, use_cache=False)
    for layer in range(model.num_layers):
        ref = captum_reference_ffn_ig(model, task, data, layer, cfg)
        np.testing.assert_allclose(ours.ffn[layer], ref, rtol=1e-4, atol=1e-7)


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


# ----- a tiny random Llama (grouped-query attention) with a tiny word-level tokenizer ------------------------------
LLAMA_WORDS = (
    "negative positive world sports business sci tech review sentiment text topic answer question label "
    "the a an and of to is in it that this for with was as on at by be are not but or from his her they he she "
    "movie film story good bad great best worst funny boring fun love hate like well very too more most all no "
    "one two new year game team win market price stock company oil bank deal computer software internet space "
    ". , : ! ? ' / -"
).split()


def llama_tokenizer():
    """A word-level tokenizer over LLAMA_WORDS (lower-cased, '<unk>' for other words, '<s>' first)."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    vocab = {w: i for i, w in enumerate(["<pad>", "<unk>", "<s>", *LLAMA_WORDS])}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.normalizer = normalizers.Lowercase()
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", 2)])
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", unk_token="<unk>", bos_token="<s>",
                                   model_input_names=["input_ids", "attention_mask"])


def tiny_llama_config(vocab: int = len(LLAMA_WORDS) + 3):
    from transformers import LlamaConfig

    return LlamaConfig(vocab_size=vocab, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                       num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
                       tie_word_embeddings=True, pad_token_id=0, bos_token_id=2, eos_token_id=1)


SST2_PROMPT_TEMPLATE = "review : {text} sentiment :"


def tiny_llama(seed: int = 0, prompts: bool = True) -> MultiTaskModel:
    """A random 2-layer LlamaForCausalLM (hidden 32, 4 query heads sharing 2 key/value heads, MLP 64, ~100 words)
    as a causal-LM task model; sst2 asked with one demonstration per label (when `prompts`)."""
    from transformers import LlamaForCausalLM

    from tp_core.decoder import PromptTask

    torch.manual_seed(seed)
    lm = LlamaForCausalLM(tiny_llama_config())
    with torch.no_grad():
        for p in lm.parameters():
            p.mul_(3.0)
    task = TASKS[0]
    prompt = PromptTask(SST2_PROMPT_TEMPLATE, (("negative",), ("positive",)),
                        demos=(("a great fun movie", None, 1), ("a boring bad film", None, 0)))
    model = MultiTaskModel(lm, llama_tokenizer(), {task.name: task} if prompts else {}, kind="causal_lm",
                           source="tiny-llama", prompts={task.name: prompt} if prompts else None)
    return model.eval()


@functools.cache
def _bpe_json(vocab_size: int) -> str:
    """The trained tokenizer of `bpe_tokenizer` as tokenizer.json text (trained once per test process)."""
    return _train_bpe(vocab_size).to_str()


def bpe_tokenizer(vocab_size: int = 1000):
    """A fresh `PreTrainedTokenizerFast` over `_train_bpe`'s tokenizer."""
    from tokenizers import Tokenizer
    from transformers import PreTrainedTokenizerFast

    return PreTrainedTokenizerFast(tokenizer_object=Tokenizer.from_str(_bpe_json(vocab_size)), pad_token="<pad>",
                                   bos_token="<s>", model_input_names=["input_ids", "attention_mask"])


def _train_bpe(vocab_size: int):
    """A byte-level BPE tokenizer (the kind Llama 3, Qwen and SmolLM use) trained on the first train texts of sst2
    and ag_news and the tiny prompt (so its label words are single tokens); '<pad>' and '<s>' special."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

    from tp_core.data import load_split

    texts = list(load_split("sst2", "train", limit=1000).texts) + list(load_split("ag_news", "train", limit=1000).texts)
    cue = [SST2_PROMPT_TEMPLATE.format(text=t) + " " + w for t in texts[:100] for w in ("negative", "positive")]
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator(texts + cue, trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=["<pad>", "<s>"], initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False))
    tok.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", 1)])
    return tok


def tiny_bpe_llama(seed: int = 0) -> MultiTaskModel:
    """`tiny_llama` with a byte-level BPE tokenizer (`bpe_tokenizer`) instead of the word-level one."""
    from transformers import LlamaForCausalLM

    tok = bpe_tokenizer()
    torch.manual_seed(seed)
    cfg = tiny_llama_config(len(tok))
    cfg.pad_token_id, cfg.bos_token_id, cfg.eos_token_id = 0, 1, 1
    lm = LlamaForCausalLM(cfg)
    with torch.no_grad():
        for p in lm.parameters():
            p.mul_(3.0)
    base = tiny_llama()
    return MultiTaskModel(lm, tok, dict(base.tasks), kind="causal_lm", source="tiny-bpe-llama",
                          prompts=dict(base.prompts)).eval()


def _llama_cpp_permute(w: torch.Tensor, n_head: int) -> torch.Tensor:
    """llama.cpp's convert_hf_to_gguf layout of q_proj / k_proj rows (rotary halves interleaved per head)."""
    return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def write_tiny_gguf(lm, path, arch: str = "llama", permute: bool = True) -> None:
    """`lm` (a LlamaForCausalLM) as a float32 GGUF file the way llama.cpp's converter writes one, with a byte-level
    ('gpt2') tokenizer over the tiny word list (no merges: it loads, it does not tokenize text sensibly)."""
    import gguf

    cfg = lm.config
    w = gguf.GGUFWriter(str(path), arch)
    w.add_name("tiny-llama")
    w.add_context_length(cfg.max_position_embeddings)
    w.add_embedding_length(cfg.hidden_size)
    w.add_block_count(cfg.num_hidden_layers)
    w.add_feed_forward_length(cfg.intermediate_size)
    w.add_head_count(cfg.num_attention_heads)
    w.add_head_count_kv(cfg.num_key_value_heads)
    w.add_layer_norm_rms_eps(cfg.rms_norm_eps)
    w.add_rope_freq_base(float(cfg.rope_parameters["rope_theta"]))
    w.add_rope_dimension_count(cfg.hidden_size // cfg.num_attention_heads)
    w.add_file_type(gguf.LlamaFileType.ALL_F32)
    tokens = ["<pad>", "<unk>", "<s>", *LLAMA_WORDS]
    w.add_tokenizer_model("gpt2")
    w.add_token_list(tokens)
    w.add_token_scores([0.0] * len(tokens))
    w.add_token_types([gguf.TokenType.CONTROL] * 3 + [gguf.TokenType.NORMAL] * len(LLAMA_WORDS))
    w.add_token_merges([])
    w.add_bos_token_id(2)
    w.add_eos_token_id(1)
    w.add_pad_token_id(0)
    names = gguf.get_tensor_name_map(gguf.MODEL_ARCH.LLAMA, cfg.num_hidden_layers)
    for name, tensor in lm.state_dict().items():
        if name == "lm_head.weight" and cfg.tie_word_embeddings:
            continue
        t = tensor.detach().float()
        if permute and name.endswith("q_proj.weight"):
            t = _llama_cpp_permute(t, cfg.num_attention_heads)
        elif permute and name.endswith("k_proj.weight"):
            t = _llama_cpp_permute(t, cfg.num_key_value_heads)
        w.add_tensor(names.get_name(name, try_suffixes=(".weight", ".bias")), t.numpy())
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def grad_x_act_point(model, ref, pcfg, n: int, samples: int = 8):
    """The jobs tests' common setup on sst2: a grad×act scores job of `samples` examples, and the point job of
    `pcfg` (a PruneConfig) on `n` validation examples. Returns (attribution config, scores job, data ref, point)."""
    from tp_core.attribution import AttributionConfig
    from tp_core.work import DataRef, point_job, scores_job

    cfg = AttributionConfig(method="grad_x_act", samples=samples)
    sjob = scores_job(model, ref, "sst2", cfg, None)
    data = DataRef("sst2", "validation", n)
    return cfg, sjob, data, point_job(model, ref, "sst2", sjob, pcfg, data, n)
