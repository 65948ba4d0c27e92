"""Session 19. Usage: python docs/probes/logp_batch_check.py PREPARED MODEL
The completion log-probs of three rl clip and three rl image sides (greedy traces): one left-padded batch of all six
vs each side alone. rl split only."""
import sys
from pathlib import Path

import torch

from embedrl.data.sides import MediaStore
from embedrl.models.reasoner import Reasoner
from embedrl.train.embedder import load_pairs

prepared, model_dir = Path(sys.argv[1]), sys.argv[2]
store = MediaStore(prepared)
refs, roles = [], []
for pairs in load_pairs(prepared, "rl").values():
    p = pairs[0]
    for ref, role in ((p.query, "query"), (p.positive, "target")):
        kinds = [r.media_kind for r in refs]
        if ref.media_kind in ("video", "image") and kinds.count(ref.media_kind) < 3:
            refs.append(ref)
            roles.append(role)
reasoner = Reasoner.load(model_dir, max_new_tokens=96)
reasoner.model.eval()
texts = reasoner.generate(refs, roles, store, batch_size=64, resolve=False)
tok = reasoner.processor.tokenizer


def logps(indices):
    prompts, images = [], []
    for i in indices:
        prompt, media = reasoner.chat_input(refs[i], roles[i], store)
        prompts.append(prompt + texts[i])
        images.extend(media)
    batch = reasoner.processor(text=prompts, images=images or None, return_tensors="pt", padding=True)
    with torch.no_grad():
        logits = reasoner.model(**batch).logits
    out = []
    for row, i in enumerate(indices):
        n = len(tok(texts[i], add_special_tokens=False)["input_ids"])
        ids = batch["input_ids"][row, -n:]
        lp = logits[row, -n - 1:-1].log_softmax(-1).gather(1, ids[:, None]).squeeze(1)
        out.append(lp)
    return out


together = logps(list(range(len(refs))))
for i, ref in enumerate(refs):
    alone = logps([i])[0]
    print(ref.media_kind, "tokens", alone.numel(), f"sum alone {alone.sum():.3f} together {together[i].sum():.3f}",
          f"max|diff| {(alone - together[i]).abs().max():.4f}")
