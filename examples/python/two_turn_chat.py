#!/usr/bin/python3
"""A two-turn chat with kvsession: the second turn sends only the new user
message (append mode) and the server reuses the first turn's KV cache.

    examples/python/gen_stubs.sh
    /usr/bin/python3 examples/python/two_turn_chat.py --addr localhost:50051

(Debian's python3 with python3-grpcio.)
"""
import argparse
import os
import sys
import uuid

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import grpc  # noqa: E402  (Debian: python3-grpcio)
from kvsession.v1 import kvsession_pb2 as pb  # noqa: E402
from kvsession.v1 import kvsession_pb2_grpc as pb_grpc  # noqa: E402


def turn(stub, session_id, text):
    request = pb.ChatRequest(
        session_id=session_id,
        mode=pb.HISTORY_MODE_APPEND,
        messages=[pb.Message(role="user", content=text)],
        max_tokens=64,
    )
    # x-session-id lets a proxy route every turn to the replica that holds
    # the session's cache.
    summary = None
    for event in stub.Chat(request, metadata=[("x-session-id", session_id)]):
        if event.HasField("delta"):
            print(event.delta.text, end="", flush=True)
        else:
            summary = event.summary
    print()
    print(f"  [reused {summary.cached_tokens} of {summary.prompt_tokens} prompt "
          f"tokens, prefilled {summary.prefilled_tokens}, generated "
          f"{summary.generated_tokens}, TTFT "
          f"{summary.time_to_first_token_seconds * 1000:.0f} ms]")
    return summary


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--addr", default="localhost:50051")
    args = parser.parse_args()
    with grpc.insecure_channel(args.addr) as channel:
        stub = pb_grpc.KvSessionStub(channel)
        session_id = f"example-{uuid.uuid4().hex[:12]}"
        turn(stub, session_id, "What is the capital of France?")
        second = turn(stub, session_id, "And of Italy?")
        assert second.cached_tokens > 0, "the second turn should reuse the cache"


if __name__ == "__main__":
    main()
