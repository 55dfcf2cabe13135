"""Chat through the model's chat template, and several samples of one answer.

python examples/python/chat.py [--model SmolLM2-135M-Instruct]
"""

import argparse

from nanovllm import LLM, SamplingParams


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model", default="SmolLM2-135M-Instruct")
    args = parser.parse_args()

    llm = LLM(args.model)
    conversation = [
        {"role": "system", "content": "You are a concise assistant."},
        {"role": "user", "content": "Give me a name for a friendly robot."},
    ]
    params = SamplingParams(n=3, temperature=0.9, max_tokens=24, seed=1)
    result = llm.chat(conversation, params)[0]
    for sample in result.outputs:
        print(f"[{sample.index}] {sample.text.strip()}  ({sample.finish_reason})")


if __name__ == "__main__":
    main()
