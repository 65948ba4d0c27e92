"""Session 25. Helpers of strip_reading.py, hop_reading.py and which_object.py: the dev set's distinct Moment-Flash
sides, and greedy short answers of a Reasoner (or warm-up checkpoint) to prompt-completion examples."""
from pathlib import Path

import torch

from embedrl.data.sides import MediaStore
from embedrl.eval.evaluator import load_task
from embedrl.eval.registry import tasks_for_data


def probe_inputs(argv: list[str], default_limit: int, clips_first: int):
    """DEV_PREPARED MODEL PROMPT_MODEL [LIMIT] -> (model path, model, processor, prompt settings, sides, store)."""
    from embedrl.models.factory import load_model
    from embedrl.models.reasoner import ReasonerPrompt

    dev, model_dir, prompt_dir = Path(argv[1]), argv[2], argv[3]
    limit = int(argv[4]) if len(argv) > 4 else default_limit
    model, processor = load_model(model_dir)
    sides, store = moment_sides(dev, limit, clips_first)
    return model_dir, model, processor, ReasonerPrompt.of_model(prompt_dir), sides, store


def moment_sides(dev: Path, limit: int, clips_first: int) -> tuple[list, MediaStore]:
    """Up to `limit` distinct Moment-Flash sides of the dev set: the first `clips_first` whole clips (queries), then
    the candidate segments, then the other queries."""
    task = next(t for t in tasks_for_data(dev) if t.name == "Moment-Flash")
    data, store = load_task(dev, task), MediaStore(dev)
    items = list(data.queries)[:clips_first] + list(data.candidates) + list(data.queries)[clips_first:]
    seen, sides = set(), []
    for item in items:
        if item.ref.media_path not in seen and len(sides) < limit:
            seen.add(item.ref.media_path)
            sides.append(item.ref)
    return sides, store


def greedy_answers(model, processor, examples: list[dict], max_new_tokens: int = 5, batch_size: int = 64) -> list[str]:
    """The model's greedy completion of each example's prompt (with its images), stripped."""
    model.eval()
    processor.tokenizer.padding_side = "left"
    answers = []
    for start in range(0, len(examples), batch_size):
        chunk = examples[start:start + batch_size]
        texts = [processor.apply_chat_template(e["prompt"], tokenize=False, add_generation_prompt=True) for e in chunk]
        batch = processor(text=texts, images=[im for e in chunk for im in e["images"]], return_tensors="pt",
                          padding=True)
        with torch.no_grad():
            out = model.generate(**batch, max_new_tokens=max_new_tokens, do_sample=False,
                                 pad_token_id=processor.tokenizer.pad_token_id)
        decoded = processor.tokenizer.batch_decode(out[:, batch["input_ids"].shape[1]:], skip_special_tokens=True)
        answers += [a.strip() for a in decoded]
    return answers
