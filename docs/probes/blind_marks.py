"""Session 29. Usage: python docs/probes/blind_marks.py DIR N_GROUPS MODEL...
A grounded Reasoner's greedy first marks on the marked images of the last N_GROUPS rl groups of DIR (with 60
updates of 4 groups EG-RL trains on all but one of the 241), split by whether MiniMMEB's teacher sees the dot: how
often the first mark is the dotted region. Tells whether EG-RL moved the pointer on the teacher's blind spots on
the sides it trained on (the dev set tells whether that carries). rl split only."""
import sys
from pathlib import Path

from embedrl.config import build_config
from embedrl.data.sides import MediaStore
from embedrl.experiment import _last_rows
from embedrl.models.reasoner import Reasoner, ReasonerPrompt
from embedrl.tcot.regions import first_mark
from embedrl.tcot.teachers import sees_dot
from embedrl.train.egrl import EGRLStageConfig
from embedrl.train.perception import single_detail

prepared, n_groups = Path(sys.argv[1]) / "prepared", int(sys.argv[2])
cfg = build_config(EGRLStageConfig, "tiny", "egrl", seed=0, output_dir=str(prepared.parent / "unused"))
for model in sys.argv[3:]:
    rows, sides = _last_rows(prepared, ReasonerPrompt.of_model(model), cfg, n_groups)
    picked = [(r, sides[r["side"]]) for r in rows if sides[r["side"]].media_kind == "image"]
    picked = [(r, ref, found[1]) for r, ref in picked if (found := single_detail(ref.scene or {})) is not None]
    texts = Reasoner.load(model, max_new_tokens=128).generate([ref for _, ref, _ in picked],
                                                              [r["role"] for r, _, _ in picked], MediaStore(prepared),
                                                              batch_size=128, resolve=False)
    for label, flag in (("teacher sees the dot", True), ("teacher blind", False)):
        on = [first_mark(t) == mark for t, (_, ref, mark) in zip(texts, picked, strict=True)
              if sees_dot(ref.scene["objects"][mark - 1]) == flag]
        print(model, label, "first mark on the dot", sum(on), "of", len(on), flush=True)
