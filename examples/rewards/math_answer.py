#!/usr/bin/env python3
"""A verifiable reward for `rlhf grpo --reward-cmd` (or any program that speaks its protocol).

rlhf starts this once and keeps it running. Each line on stdin is one sample's request: the
prompt line's JSON fields (here "prompt" and "answer") plus the sampled "completion". Each answer
on stdout is one line, in request order, flushed: {"reward": x} (a bare number works too).

The reward: 1.0 when the last number in the completion equals the line's "answer" (compared as
numbers: "4", "4.0" and "+4" all match 4), 0.0 otherwise, and 0.0 when the line has no answer.

    rlhf grpo --model runs/sft --prompts math.jsonl --out runs/grpo \
              --reward-cmd "python3 examples/rewards/math_answer.py"
"""
import json
import re
import sys

NUMBER = re.compile(r"[-+]?\d+(?:\.\d+)?")


def reward(request):
    answer = request.get("answer")
    found = NUMBER.findall(request.get("completion", ""))
    if answer is None or not found:
        return 0.0
    try:
        return 1.0 if float(found[-1]) == float(answer) else 0.0
    except ValueError:
        return 0.0


def main():
    for line in sys.stdin:
        print(json.dumps({"reward": reward(json.loads(line))}), flush=True)


if __name__ == "__main__":
    main()
