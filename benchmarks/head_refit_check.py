"""The head re-fit of recovery (RecoveryConfig.head) on a few plans, one seed, no interval: kept vs dense of the
pruned + lstsq-recovered demo model (full vocabulary, ig masks with the app's settings, 1,024 calibration texts)
with the plain task head and with its first projection re-fitted by ridge least squares (ridge 0.01, 0.1, 1) on
the pooled sequence. It predates RecoveryConfig.head, which now does the ridge-0.01 fit inside recover(): run with
the head re-fit off to reproduce the "keep" column (`head=False` below).

    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/head_refit_check.py sst2      # ~3 min; ag_news ~15 min
"""
import os
import sys
import copy
from dataclasses import replace
sys.path.insert(0, str(__import__("pathlib").Path(__file__).resolve().parent.parent))
os.environ["HF_HUB_OFFLINE"]="1"
import numpy as np
import torch
torch.set_num_threads(1)
from tp_core.model import load_model
from tp_core.data import load_split
from tp_core.attribution import attribute
from tp_core.masks import PruneConfig, build_masks
from tp_core.recovery import as_config, calibration_data, recover
from tp_core.recovery_fit import ridge_solve
from tp_core.pruning import prune_physically
from tp_core.evaluation import predict_logits, predictions
from tp_core.policy import APP_ATTRIBUTION
task = sys.argv[1] if len(sys.argv) > 1 else "sst2"
m = load_model("demo", device="cpu")
m.eval()
va = load_split(task,"validation", limit=1000)
y=np.asarray(va.labels)
dense = predictions(predict_logits(m,task,va),"single")
dacc=(dense==y).mean()
sc = attribute(m, task, APP_ATTRIBUTION)
calib = calibration_data(task, 1024, 0)
def pooled_pre(model, data):
    feats, pre = [], []
    head = model.heads[model.resolve_task(task)]
    def hook(mod, args, out):
        feats.append(args[0].detach())
        pre.append(out.detach())
    h = head.dense.register_forward_hook(hook)
    with torch.no_grad():
        for _, b in model.batches(data.texts, data.pairs, 64, 128):
            model(**b, task=task)
    h.remove()
    return torch.cat(feats).double(), torch.cat(pre).double()
Xd, Td = pooled_pre(m, calib)
for f, hs in ((0.85, 0.7), (0.8, 0.5), (0.9, 0.5), (0.7, 0.7)):
    masks = build_masks(sc, PruneConfig(f, hs), m.unit_shape())
    rec = recover(m, task, masks, calib, replace(as_config("lstsq"), head=False))
    small = prune_physically(m, masks, task, recovery=rec)
    small.eval()
    p0 = predictions(predict_logits(small, task, va), "single")
    Xs, _ = pooled_pre(small, calib)
    head = small.heads[small.resolve_task(task)]
    A = torch.cat([Xs, torch.ones(len(Xs),1, dtype=torch.float64)],1)
    X0 = torch.cat([head.dense.weight.detach().double().T, head.dense.bias.detach().double().view(1,-1)],0)
    res = []
    for ridge in (0.01, 0.1, 1.0):
        C = A.T@A
        lam = ridge*float(C.diagonal().mean())
        X = ridge_solve(C, A.T@Td, X0, lam)
        h2 = copy.deepcopy(small)
        hd = h2.heads[h2.resolve_task(task)].dense
        with torch.no_grad():
            hd.weight.copy_(X[:-1].T.float())
            hd.bias.copy_(X[-1].float())
        p1 = predictions(predict_logits(h2, task, va), "single")
        res.append((ridge, round((p1==y).mean()/dacc,4)))
    print(task, f, hs, "keep", round((p0==y).mean()/dacc,4), "headfit", res, flush=True)
