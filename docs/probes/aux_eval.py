import sys, re, torch
import sys; sys.path.insert(0, __import__("os").path.dirname(__file__)); import after
from embedrl.train.embedder import load_pairs
from embedrl.data.sides import MediaStore
from embedrl.models.reasoner import Reasoner, reasoner_images, side_regions, reasoner_messages
torch.set_num_threads(2)
root = "/tmp/abl/run4/prepared"
r = Reasoner.load(sys.argv[1], max_new_tokens=40)
store = MediaStore(root); items, seen = [], set()
for pairs in load_pairs(root, "rl").values():
    for p in pairs:
        for ref in (p.query, p.positive):
            sc = ref.scene or {}
            if ref.media_kind != "image" or sc.get("type") != "image" or ref.media_path in seen: continue
            seen.add(ref.media_path)
            k = next(i for i, o in enumerate(sc["objects"], 1) if o["detail"] == "dot")
            items.append((ref, k, len(sc["objects"])))
items = items[:400]
correct = 0; n = 0; chance = 0
for s in range(0, len(items), 100):
    chunk = items[s:s+100]; texts, images = [], []
    for ref, k, m in chunk:
        msgs = reasoner_messages(ref, "query", r.prompt)
        content = list(msgs[0]["content"]); content[-1] = {"type": "text", "text": "\nWhich region carries the dot?"}
        texts.append(r.processor.apply_chat_template([{"role": "user", "content": content}], tokenize=False, add_generation_prompt=True))
        images += reasoner_images(ref, store, r.prompt)
    b = r.processor(text=texts, images=images, return_tensors="pt", padding=True)
    with torch.no_grad():
        g = r.model.generate(**b, max_new_tokens=40, do_sample=False, pad_token_id=r.processor.tokenizer.pad_token_id)
    outs = r.processor.tokenizer.batch_decode(g[:, b["input_ids"].shape[1]:], skip_special_tokens=True)
    for (ref, k, m), o in zip(chunk, outs):
        marks = re.findall(r"#(\d+)", o); mm = re.search(r"#(\d+)\s+dot", o) if "dot" in o or "plain" in o else None
        mm = mm or (re.search(r"#(\d+)\s*$", o.strip()) if marks else None); n += 1; chance += 1 / m
        correct += int(mm is not None and int(mm.group(1)) == k)
    if s == 0: print(outs[:10], [c[1] for c in chunk[:10]])
print("aux accuracy on rl split", correct / n, "chance", chance / n, "n", n)
