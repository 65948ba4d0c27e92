"""Session 27. Usage: python docs/probes/first_marks.py DIR MODEL...
Where a grounded Reasoner's greedy traces first point on the marked images of DIR's last 64 rl groups (never the
eval split): the most common first marks against the dotted regions' marks, the hits, and how often the first mark
is the region before the last (a position, not the detail)."""
import collections
import sys
from pathlib import Path

from embedrl.config import build_config
from embedrl.data.sides import MediaStore
from embedrl.experiment import _last_rows
from embedrl.models.reasoner import Reasoner, ReasonerPrompt
from embedrl.tcot.regions import first_mark
from embedrl.train.egrl import EGRLStageConfig
from embedrl.train.perception import single_detail

prepared = Path(sys.argv[1]) / "prepared"
cfg = build_config(EGRLStageConfig, "tiny", "egrl", seed=0, output_dir=str(prepared.parent / "unused"))
for model in sys.argv[2:]:
    rows, sides = _last_rows(prepared, ReasonerPrompt.of_model(model), cfg, 64)
    picked = [(r, sides[r["side"]]) for r in rows if sides[r["side"]].media_kind == "image"]
    picked = [(r, ref, found[1]) for r, ref in picked if (found := single_detail(ref.scene or {})) is not None]
    texts = Reasoner.load(model, max_new_tokens=128).generate([ref for _, ref, _ in picked], [r["role"] for r, _, _ in picked],
                                                              MediaStore(prepared), batch_size=128, resolve=False)
    firsts = [first_mark(t) for t in texts]
    before_last = sum(f == len(ref.scene["objects"]) - 1 for f, (_, ref, _) in zip(firsts, picked, strict=True))
    print(model, "first marks", collections.Counter(firsts).most_common(6), "dotted",
          collections.Counter(m for *_, m in picked).most_common(8), flush=True)
    print(model, "on the dot", sum(f == m for f, (*_, m) in zip(firsts, picked, strict=True)), "before the last",
          before_last, "of", len(picked), flush=True)
