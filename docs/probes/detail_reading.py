"""Session 27. Usage: python docs/probes/detail_reading.py PREPARED PROMPT_MODEL LIMIT MODEL...
"Does it carry a dot?" about single region crops of the rl split's marked images (one crop with the dot and one
without per image, LIMIT examples), asked of each model (a warm-up phase's checkpoint or a Reasoner): right rate on
each kind. Whether a warm-up phase kept the detail phase's reading. PROMPT_MODEL gives the prompt settings."""
import sys
from pathlib import Path

from flash_questions import greedy_answers

from embedrl.models.factory import load_model
from embedrl.models.reasoner import ReasonerPrompt
from embedrl.train.perception import detail_examples

prepared, prompt, limit = Path(sys.argv[1]), ReasonerPrompt.of_model(sys.argv[2]), int(sys.argv[3])
examples = detail_examples(prepared, prompt, split="rl")[:limit]
truths = [e["completion"][0]["content"] for e in examples]
for model_dir in sys.argv[4:]:
    model, processor = load_model(model_dir)
    answers = greedy_answers(model, processor, examples, max_new_tokens=3)
    for kind in ("yes", "no"):
        picked = [a for a, t in zip(answers, truths, strict=True) if t == kind]
        print(model_dir, kind, "right", sum(a == kind for a in picked), "of", len(picked), flush=True)
