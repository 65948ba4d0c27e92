"""Models: specs (`spec`), the tiny tokenizer (`tokenizer`), the torchvision-free processor (`processor`),
and building/saving/loading Qwen-VL models (`factory`).

Nothing is imported here, so that `import embedrl.models.spec` does not pull in torch or transformers.
"""
