"""What the task vocabulary costs on sst2 and how much frequent extra tokens buy back (issue 13 follow-up; no
results.json key). The dense demo model with the sst2 train vocabulary (min_count 1), plus the K most frequent
tokens of other tasks' train texts (ag_news, trec, cola, mrpc, rte, cr; not mr, whose train split holds sst2
validation sentences), against the dense model with the full vocabulary, on all 872 sst2 validation examples.

    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/vocab_cost.py      # ~2 min on 2 cores
"""
import os
import sys
import copy
import collections
sys.path.insert(0, str(__import__("pathlib").Path(__file__).resolve().parent.parent))
os.environ["HF_HUB_OFFLINE"]="1"
import numpy as np
import torch
torch.set_num_threads(1)
from tp_core.model import load_model
from tp_core.data import load_split
from tp_core.vocab import task_vocab, prune_vocab, _plain_backend
from tp_core.evaluation import predict_logits, predictions
m = load_model("demo", device="cpu")
tr = load_split("sst2","train")
va = load_split("sst2","validation")
y=np.asarray(va.labels)
dense = predictions(predict_logits(m,"sst2",va),"single")
be=_plain_backend(m.tokenizer)
others=[]
for t in ["ag_news","trec","cola","mrpc","rte","cr"]:
    d=load_split(t,"train")
    others += list(d.texts) + (list(d.pairs) if d.pairs else [])
c=collections.Counter()
for s in range(0,len(others),4096):
    for enc in be.encode_batch(others[s:s+4096], add_special_tokens=False):
        c.update(enc.ids)
base = task_vocab(m.tokenizer, tr.texts, tr.pairs, 1)
print("dense acc", (dense==y).mean())
for K in (0, 1500, 3000, 6000):
    kept=set(base.kept_ids)
    extra=[i for i,_ in c.most_common() if i not in kept][:K]
    plan = copy.copy(base)
    plan.kept_ids = sorted(kept|set(extra))
    vm = copy.deepcopy(m)
    prune_vocab(vm, plan)
    p = predictions(predict_logits(vm,"sst2",va),"single")
    print(K, plan.size, "acc", (p==y).mean(), "agree", (p==dense).mean(), flush=True)
