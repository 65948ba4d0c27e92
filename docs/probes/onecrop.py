"""Sanity probe: can the tiny Reasoner learn 'does this single crop carry the dot?' (yes/no)?"""
import sys, random, re, time, torch
from pathlib import Path
import embedrl.train.sft as sft
from embedrl.config import build_config
from embedrl.data.sides import MediaStore
from embedrl.tcot.regions import region_proposals, region_crops
from embedrl.train.embedder import load_pairs
root = "/tmp/abl/run4/prepared"; OUT = Path(sys.argv[1]); STEPS = int(sys.argv[2])

def crops(split, limit):
    store = MediaStore(root); out, seen = [], set()
    rng = random.Random(0)
    for pairs in load_pairs(root, split).values():
        for p in pairs:
            for ref in (p.query, p.positive):
                sc = ref.scene or {}
                if ref.media_kind != "image" or sc.get("type") != "image" or ref.media_path in seen: continue
                seen.add(ref.media_path)
                regs = region_proposals(sc); cs = region_crops(store.load(ref)[0], regs, int(__import__("os").environ.get("CROP", "56")))
                dotted = [c for o, c in zip(sc["objects"], cs) if o["detail"] == "dot"]
                plain = [c for o, c in zip(sc["objects"], cs) if o["detail"] != "dot"]
                out += [(dotted[0], "yes"), (rng.choice(plain), "no")]
                if len(out) >= limit: return out
    return out

def examples(data_root, split="train", *, prompt=None):
    ex = [{"prompt": [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Does it carry a dot?"}]}],
           "completion": [{"role": "assistant", "content": a}], "images": [c]} for c, a in crops("train", 100000)]
    random.Random(0).shuffle(ex); print("examples", len(ex), flush=True); return ex
sft.sft_examples = examples
cfg = build_config(sft.SFTStageConfig, "tiny", "sft", output_dir=str(OUT), seed=0, max_steps=STEPS, save_strategy="no",
                   gradient_checkpointing=False)
t = time.time(); res = sft.train_sft(root, "/tmp/abl/run4/seed-0/init/reasoner", OUT, cfg)
print("sft seconds", round(time.time() - t), "losses", [round(l, 3) for l in res.losses], flush=True)
from embedrl.models.factory import load_model
model, proc = load_model(OUT / "model"); proc.tokenizer.padding_side = "left"
test = crops("rl", 400); right = 0
for i in range(0, len(test), 100):
    chunk = test[i:i + 100]
    texts = [proc.apply_chat_template([{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Does it carry a dot?"}]}],
                                      tokenize=False, add_generation_prompt=True)] * len(chunk)
    b = proc(text=texts, images=[c for c, _ in chunk], return_tensors="pt", padding=True)
    with torch.no_grad():
        g = model.generate(**b, max_new_tokens=3, do_sample=False, pad_token_id=proc.tokenizer.pad_token_id)
    outs = proc.tokenizer.batch_decode(g[:, b["input_ids"].shape[1]:], skip_special_tokens=True)
    right += sum(o.strip().startswith(a) for o, (_, a) in zip(outs, chunk))
    if i == 0: print(outs[:8], [a for _, a in chunk[:8]])
print("one-crop yes/no accuracy on rl split", right / len(test), "n", len(test), "(chance 0.5)")
