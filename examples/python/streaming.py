"""Print an answer as it is generated; the pieces join to exactly the final text.

python examples/python/streaming.py [--model SmolLM2-135M-Instruct] [QUESTION]
"""

import argparse

from nanovllm import LLM, SamplingParams


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("question", nargs="?", default="Explain what a KV cache is, briefly.")
    parser.add_argument("--model", default="SmolLM2-135M-Instruct")
    args = parser.parse_args()

    llm = LLM(args.model)
    messages = [{"role": "user", "content": args.question}]
    params = SamplingParams(temperature=0, max_tokens=200)
    for delta in llm.stream(messages, params):
        print(delta.text, end="", flush=True)
        if delta.finished:
            print(f"\n[{delta.finish_reason}, {len(delta.output.token_ids)} tokens]")


if __name__ == "__main__":
    main()
