"""Session 24. Usage: python docs/probes/more_rl_groups.py PREPARED EXTRA_PREPARED EXTRA_SEED OUT
A copy of PREPARED (hard links) whose rl split also holds EXTRA_PREPARED's (the prepared MiniMMEB of another
generator seed): twice the RL groups, fresh ones, for EG-RL; no evaluation reads them. Each task's extra rows follow
its own, with ids and groups prefixed `x{seed}-` and media under `media/rl{seed}/`. Then `egrl_variant.py` on a DIR
whose `prepared` is OUT and whose seed-N/{sft,embedder} link to the ablation's."""
import os
import shutil
import sys
from pathlib import Path

from embedrl.data.readers import iter_rows, load_manifest, write_parquet

prepared, extra, seed, out = Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3]), Path(sys.argv[4])
shutil.rmtree(out, ignore_errors=True)
shutil.copytree(prepared, out, copy_function=os.link)
media = f"media/rl{seed}/"
shutil.copytree(extra / "media" / "rl", out / media, copy_function=os.link)


def moved(value):
    if isinstance(value, str) and value.startswith("media/rl/"):
        return media + value.removeprefix("media/rl/")
    return [moved(v) for v in value] if isinstance(value, list) else value


extra_tasks = {t.name: t for t in load_manifest(extra)[1] if t.split == "rl"}
for task in (t for t in load_manifest(out)[1] if t.split == "rl"):
    own = [row for _, row in iter_rows(task.location(out))]
    more = []
    for _, row in iter_rows(extra_tasks[task.name].location(extra)):
        row = {k: moved(v) if k.endswith("_path") else v for k, v in row.items()}
        row["id"], row["group"] = f"x{seed}-{row['id']}", f"x{seed}-{row['group']}"
        more.append(row)
    os.unlink(task.location(out))  # a hard link to PREPARED's file: replace it, do not write through it
    write_parquet(task.location(out), own + more)
    print(task.name, len(own), "+", len(more), "pairs", flush=True)
