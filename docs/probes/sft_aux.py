"""SFT with grounding QA examples (gold dot region, train split) mixed in; then rl-holdout."""
import sys; sys.path.insert(0, __import__("os").path.dirname(__file__)); import after
import sys, os, json, random, time
from pathlib import Path
import embedrl.train.sft as sft
from embedrl.config import build_config
from embedrl.data.sides import MediaStore
from embedrl.models.reasoner import reasoner_images, side_regions
from embedrl.train.embedder import load_pairs

COPIES = int(sys.argv[1]); OUT = Path(sys.argv[2]); STEPS = int(sys.argv[3]) if len(sys.argv) > 3 else 170
root = "/tmp/abl/run4/prepared"
orig = sft.sft_examples

def aux(data_root, prompt):
    store = MediaStore(data_root); out, seen = [], set()
    for pairs in load_pairs(data_root, "train").values():
        for p in pairs:
            for ref in (p.query, p.positive):
                sc = ref.scene or {}
                if ref.media_kind != "image" or sc.get("type") != "image" or ref.media_path in seen:
                    continue
                seen.add(ref.media_path)
                regs = side_regions(ref, prompt)
                k = next(i for i, o in enumerate(sc["objects"], 1) if o["detail"] == "dot")
                if k > len(regs): continue
                msgs = sft.reasoner_messages(ref, "query", prompt)
                content = list(msgs[0]["content"]); content[-1] = {"type": "text", "text": "\nWhich region carries the dot?"}
                walk = " ".join(f"#{i} {'dot' if o['detail'] == 'dot' else 'plain'}" for i, o in enumerate(sc["objects"][:len(regs)], 1))
                answer = f"{walk}. #{k}" if os.environ.get("WALK") == "1" else f"#{k}"
                out.append({"prompt": [{"role": "user", "content": content}],
                            "completion": [{"role": "assistant", "content": answer}],
                            "images": reasoner_images(ref, store, prompt)})
    return out

def patched(data_root, split="train", *, prompt=None):
    ex = orig(data_root, split, prompt=prompt)
    a = aux(data_root, prompt)
    print("tcot examples", len(ex), "aux", len(a), "x", COPIES, flush=True)
    ex = (ex if COPIES >= 0 else []) + a * abs(COPIES)
    random.Random(0).shuffle(ex)
    return ex
sft.sft_examples = patched

cfg = build_config(sft.SFTStageConfig, "tiny", "sft", output_dir=str(OUT), seed=0)
cfg.max_steps = STEPS
t = time.time()
res = sft.train_sft(root, os.environ.get("INIT", "/tmp/abl/run4/seed-0/init/reasoner"), OUT, cfg)
print("sft seconds", time.time() - t, "losses", res.losses, flush=True)
from embedrl.experiment import rl_holdout
from embedrl.train.egrl import EGRLStageConfig
ecfg = build_config(EGRLStageConfig, "tiny", "egrl", output_dir=".", seed=0)
if COPIES >= 0: score = rl_holdout(Path(root), OUT / "model", Path("/tmp/abl/run4/seed-0/embedder/model"), ecfg, n_groups=96)
if COPIES >= 0: print(json.dumps(score, indent=1))
