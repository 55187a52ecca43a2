"""Build a tiny random-weight Llama model that vLLM can load, fully offline.

The model's text is noise: it exists so tests and the demo exercise the real engine (tokenizer,
chat template, batching, structured outputs, finish reasons) in seconds on a CPU. A real model is
a config value away.

torch/transformers/tokenizers are imported inside the function so importing this module is cheap.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

# ChatML, the format most instruction models use; `add_generation_prompt` opens the reply.
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)

SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]

# A small, varied corpus so the BPE learns merges for English, JSON punctuation and CJK; the
# byte-level alphabet still covers every script and emoji.
_CORPUS = [
    "You are a helpful assistant. Answer the question clearly and completely.",
    "Write three questions of increasing difficulty: Easy, Medium, Hard.",
    '{"questions": ["What is it?", "Why does it matter?", "How would you design it?"]}',
    '{"easy": "...", "medium": "...", "hard": "...", "names": ["a", "b"]}',
    "Strengths: clear structure. Weaknesses: missing examples. Suggestions: add detail.",
    "Marriage and Relationships, Artificial Intelligence, Healthcare, Pets, Environment, "
    "Technology, Education and Training, Career Development, Finance and Investment.",
    "Role Playing, Daily Chat, Domain Knowledge QA, Given Material Processing, "
    "Response Format Control, View, Creation.",
    "人工智能 医疗健康 宠物 环境 科技 教育培训 职业发展 金融投资 婚恋情感 旅游探险 美食烹饪",
    "请根据标签写出三个问题：简单、中等、困难。回答要清晰完整。",
    "0 1 2 3 4 5 6 7 8 9 10 100 1000 - _ . , ; : ! ? ' \" ( ) [ ] { } < > / \\ | @ # $ % ^ & * + =",
]


def build_tiny_model(
    out_dir: str | os.PathLike[str],
    *,
    vocab_size: int = 2048,
    hidden_size: int = 128,
    num_layers: int = 2,
    num_heads: int = 2,
    head_dim: int = 64,
    max_position_embeddings: int = 4096,
    seed: int = 0,
) -> Path:
    """Write a random-weight LlamaForCausalLM with a byte-level BPE tokenizer to `out_dir`.

    head_dim must be 64 or more: vLLM's CPU attention rejects head_dim 16. The directory is built
    under a temporary name and renamed into place, so an interrupted build never leaves a
    half-written model behind. Returns the model directory.
    """
    if head_dim < 32 or head_dim % 32:
        raise ValueError(f"head_dim must be a multiple of 32 (vLLM CPU attention), got {head_dim}")
    if hidden_size != num_heads * head_dim:
        raise ValueError(
            f"hidden_size ({hidden_size}) must equal num_heads * head_dim "
            f"({num_heads} * {head_dim} = {num_heads * head_dim})"
        )

    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    out = Path(out_dir).resolve()
    out.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    work.chmod(0o755)  # mkdtemp makes it private; a model directory is shared data

    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    bpe.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    bpe.train_from_iterator(_CORPUS * 4, trainer=trainer)

    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=bpe,
        bos_token="<|endoftext|>",
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        unk_token=None,
    )
    tokenizer.chat_template = CHAT_TEMPLATE
    tokenizer.model_max_length = max_position_embeddings
    tokenizer.save_pretrained(work)

    eos_id = int(tokenizer.convert_tokens_to_ids("<|im_end|>"))  # type: ignore[arg-type]
    bos_id = int(tokenizer.convert_tokens_to_ids("<|endoftext|>"))  # type: ignore[arg-type]
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden_size,
        intermediate_size=hidden_size * 2,
        num_hidden_layers=num_layers,
        num_attention_heads=num_heads,
        num_key_value_heads=num_heads,
        head_dim=head_dim,
        max_position_embeddings=max_position_embeddings,
        bos_token_id=bos_id,
        eos_token_id=eos_id,
        pad_token_id=bos_id,
        tie_word_embeddings=False,
    )
    config.dtype = "bfloat16"  # recorded in config.json; vLLM's dtype="auto" follows it
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config).to(dtype=torch.bfloat16)  # type: ignore[call-arg]
    model.generation_config.eos_token_id = eos_id
    model.generation_config.bos_token_id = bos_id
    model.save_pretrained(work, safe_serialization=True)
    for file in work.iterdir():
        file.chmod(0o644)
    (work / "condor_tiny_model.json").write_text(
        json.dumps({"kind": "condor-tiny-random-llama", "seed": seed, "vocab_size": len(tokenizer)})
    )

    if out.exists():
        import shutil

        shutil.rmtree(out)
    os.replace(work, out)
    return out
