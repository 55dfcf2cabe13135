"""Drive the engine the way a server does: one step-loop thread, requests from others.

EngineSession is the layer under LLM: add_request / step / abort with detokenization and
stop strings, safe to call from several threads. Here three client threads each submit a
request and read its deltas from a queue the step loop fills.

    python examples/python/engine_session.py [--model SmolLM2-135M-Instruct]
"""

import argparse
import queue
import threading

from nanovllm import LLM, SamplingParams, StreamDelta


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model", default="SmolLM2-135M-Instruct")
    args = parser.parse_args()

    session = LLM(args.model).session
    tokenizer = session.tokenizer
    streams: dict[str, queue.Queue[StreamDelta]] = {}
    lock = threading.Lock()
    done = threading.Event()

    def step_loop() -> None:
        while not done.is_set():
            if not session.has_unfinished():
                done.wait(0.01)
                continue
            for delta in session.step():
                with lock:
                    streams[delta.request_id].put(delta)

    def client(name: str, prompt: str) -> None:
        ids = tokenizer.encode(prompt)
        with lock:  # register the stream before the loop can produce for it
            request_id = session.add_request(ids, SamplingParams(temperature=0, max_tokens=24))
            streams[request_id] = queue.Queue()
        text = ""
        while True:
            delta = streams[request_id].get()
            text += delta.text
            if delta.finished:
                break
        print(f"{name}: {prompt!r} -> {text!r} ({delta.finish_reason})")

    loop = threading.Thread(target=step_loop)
    loop.start()
    clients = [
        threading.Thread(target=client, args=(f"client {i}", prompt))
        for i, prompt in enumerate(["The sky is", "Water boils at", "A haiku about code:"])
    ]
    for thread in clients:
        thread.start()
    for thread in clients:
        thread.join()
    done.set()
    loop.join()


if __name__ == "__main__":
    main()
