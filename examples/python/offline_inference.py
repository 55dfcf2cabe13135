"""Batch generation, as with vLLM: prompts in, one RequestOutput per prompt, in order.

python examples/python/offline_inference.py [--model SmolLM2-135M-Instruct]
"""

import argparse

from nanovllm import LLM, SamplingParams


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model", default="SmolLM2-135M-Instruct")
    args = parser.parse_args()

    llm = LLM(args.model)
    prompts = [
        "Hello, my name is",
        "The president of the United States is",
        "The capital of France is",
        "The future of AI is",
    ]
    params = SamplingParams(temperature=0.8, top_p=0.95, max_tokens=32, seed=0)
    for output in llm.generate(prompts, params):
        print(f"{output.prompt!r} -> {output.outputs[0].text!r}")


if __name__ == "__main__":
    main()
