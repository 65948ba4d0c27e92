"""Session 26. Usage: python docs/probes/moment_groups.py DIR OUT SEED SFT
DIR's data again (its data seed), but Moment-Flash's rl groups made of near misses in time: one clip, the flash of
the same object in each of the four segments (MiniMMEB's groups hold one moment, the flash moved to another object,
which makes the claim and the key frame worth nothing to the reward: claim_reward.py). Writes OUT/data and
OUT/prepared (every file but the rl split's Moment-Flash equal to DIR's: checked here) and links
OUT/seed-SEED/embedder and OUT/seed-SEED/SFT to DIR's, so that `egrl_variant.py --train-only --from SFT OUT ...`
trains EG-RL on these groups. The eval split is untouched; score on the dev set (dev_eval.py)."""
import filecmp
import json
import sys
from pathlib import Path

from embedrl.data.minimmeb import tasks
from embedrl.data.minimmeb.generate import generate
from embedrl.data.prepare import prepare

root, out, seed, sft = Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
moment = tasks.MomentRetrieval
moment.targets = lambda self, base: list(self.segment_starts)
moment.retarget = lambda self, base, start: base.with_flash(base.flash_object,
                                                            start + base.flash_frame - self._start(base))
generate(out / "data", seed=json.loads((root / "data" / "manifest.json").read_text())["seed"], progress=False)
prepare(out / "data", out / "prepared")
changed = [str(p.relative_to(out / "prepared")) for p in (out / "prepared").rglob("*.parquet")
           if not filecmp.cmp(p, root / "prepared" / p.relative_to(out / "prepared"), shallow=False)]
assert changed == ["rl/Moment-Flash.parquet"], changed
(out / f"seed-{seed}").mkdir(parents=True, exist_ok=True)
for name in ("embedder", sft):
    link = out / f"seed-{seed}" / name
    if not link.exists():
        link.symlink_to(root / f"seed-{seed}" / name)
print("changed:", changed, flush=True)
