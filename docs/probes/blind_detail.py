"""Session 29. Usage: python docs/probes/blind_detail.py PREPARED PROMPT_MODEL MODEL...
"Does it carry a dot?" about the dotted region's crop of every distinct rl image with one dotted object, split by
whether MiniMMEB's teacher sees that dot (`sees_dot`: its blind spots are dark or small objects). Tells whether the
cold start's misses on the teacher's blind spots are a perception limit (the Reasoner cannot read those dots
either) or a pointer policy copied from the teacher. rl split only."""
import sys
from pathlib import Path

from flash_questions import greedy_answers

from embedrl.data.sides import MediaStore
from embedrl.models.factory import load_model
from embedrl.models.reasoner import ReasonerPrompt, side_regions
from embedrl.tcot.regions import region_crops, region_proposals
from embedrl.tcot.teachers import sees_dot
from embedrl.train.perception import DETAIL_QUESTION, _example, detail_images

prepared, prompt = Path(sys.argv[1]), ReasonerPrompt.of_model(sys.argv[2])
store = MediaStore(prepared)
examples, seen = [], []
for image in detail_images(prepared, "rl"):
    regions = side_regions(image.ref, prompt) or region_proposals(image.ref.scene)
    crops = region_crops(store.load(image.ref)[0], regions, prompt.region_size)
    examples.append(_example([{"type": "image"}], DETAIL_QUESTION.format(detail=image.detail), "yes",
                             [crops[image.mark - 1]]))
    seen.append(sees_dot(image.ref.scene["objects"][image.mark - 1]))
for model_dir in sys.argv[3:]:
    model, processor = load_model(model_dir)
    answers = greedy_answers(model, processor, examples, max_new_tokens=3)
    for kind, flag in (("teacher sees the dot", True), ("teacher blind", False)):
        picked = [a for a, s in zip(answers, seen, strict=True) if s == flag]
        print(model_dir, kind, "answered yes", sum(a == "yes" for a in picked), "of", len(picked), flush=True)
