"""Is the dot visible in 56 px region crops to the tiny vision tower? Linear probe + from-scratch training."""
import sys, time, random
import numpy as np, torch
from embedrl.train.embedder import load_pairs
from embedrl.data.sides import MediaStore
from embedrl.tcot.regions import region_proposals, region_crops
from embedrl.models.factory import load_model
torch.set_num_threads(2)
root = "/tmp/abl/run4/prepared"
SIZE = int(sys.argv[1]) if len(sys.argv) > 1 else 56

def crops(split, limit):
    store = MediaStore(root)
    X, y, seen = [], [], set()
    for pairs in load_pairs(root, split).values():
        for p in pairs:
            for ref in (p.query, p.positive):
                sc = ref.scene or {}
                if ref.media_kind != "image" or sc.get("type") != "image" or ref.media_path in seen:
                    continue
                seen.add(ref.media_path)
                regs = region_proposals(sc)
                img = store.load(ref)[0]
                cs = region_crops(img, regs, SIZE)
                for o, c in zip(sc["objects"], cs):
                    X.append(c); y.append(int(o["detail"] == "dot"))
                if len(y) >= limit: return X, np.array(y)
    return X, np.array(y)

Xtr, ytr = crops("train", 6000); Xte, yte = crops("rl", 1500)
print("train crops", len(ytr), "dotted share", ytr.mean(), "test", len(yte), yte.mean(), flush=True)

def feats(model, proc, X):
    out = []
    for i in range(0, len(X), 256):
        b = proc.image_processor(images=X[i:i+256], return_tensors="pt")
        with torch.no_grad():
            f = model.model.visual(b["pixel_values"], grid_thw=b["image_grid_thw"])
            f = f[0] if isinstance(f, tuple) else getattr(f, "pooler_output", f)
        n = f.shape[0] // len(X[i:i+256])
        out.append(f.reshape(len(X[i:i+256]), n, -1).float().numpy())
    return np.concatenate(out)


def fit_probe(a, y, steps=500):
    a = torch.tensor(a); mu, sd = a.mean(0), a.std(0) + 1e-6; a = (a - mu) / sd
    w = torch.zeros(a.shape[1], requires_grad=True); b0 = torch.zeros(1, requires_grad=True)
    yt = torch.tensor(y).float(); pw = (1 - yt.mean()) / yt.mean()
    opt = torch.optim.Adam([w, b0], lr=1e-2)
    for _ in range(steps):
        opt.zero_grad(); l = torch.nn.functional.binary_cross_entropy_with_logits(a @ w + b0, yt, pos_weight=pw) + 1e-3 * w.pow(2).sum(); l.backward(); opt.step()
    return lambda x: (((torch.tensor(x) - mu) / sd) @ w + b0 > 0).int().numpy()
def balacc(p, y): return 0.5 * ((p[y == 1] == 1).mean() + (p[y == 0] == 0).mean())
for name, path in [("sft", "/tmp/abl/run4/seed-0/sft/model"), ("embedder", "/tmp/abl/run4/seed-0/embedder/model"), ("init", "/tmp/abl/run4/seed-0/init/reasoner")]:
    try:
        model, proc = load_model(path)
    except Exception as e:
        print(name, "load failed", e); continue
    Ftr, Fte = feats(model, proc, Xtr), feats(model, proc, Xte)
    for how, a, b in [("mean", Ftr.mean(1), Fte.mean(1)), ("concat", Ftr.reshape(len(Ftr), -1), Fte.reshape(len(Fte), -1))]:
        pr = fit_probe(a, ytr)
        print(name, how, "probe balanced acc train %.3f test %.3f" % (balacc(pr(a), ytr), balacc(pr(b), yte)), flush=True)
