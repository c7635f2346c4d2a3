#!/usr/bin/env python3
"""The baseline for `cargo bench --bench sqs`: what the nc-latent-tod scripts do with SQS.

The seed enqueuer sends one message per job (`[path, job]`, a random MessageGroupId,
content-based deduplication); the seed poller receives one message, deletes it before
running it, runs it, and exits when a receive comes back empty. Here "running" a no-op
job does nothing. Prints one JSON line: jobs, seconds spent consuming, and the SQS API
calls made for sending and for consuming.

Usage: seed_poller.py QUEUE_URL JOBS   (endpoint and credentials from AWS_* variables)
"""
import json
import sys
import time
import uuid

import boto3

queue_url, jobs = sys.argv[1], int(sys.argv[2])
sqs = boto3.client("sqs")
send_calls = consume_calls = 0

for i in range(jobs):
    body = json.dumps([f"runs/bench/job_{i}.json", {"kind": "noop", "group_id": "seed", "noop": {}}])
    sqs.send_message(
        QueueUrl=queue_url,
        MessageBody=body,
        MessageGroupId=str(uuid.uuid4()),
        MessageDeduplicationId=str(uuid.uuid4()),
    )
    send_calls += 1

done = 0
started = time.perf_counter()
last_delete = started
while True:
    response = sqs.receive_message(QueueUrl=queue_url, MaxNumberOfMessages=1, WaitTimeSeconds=1)
    consume_calls += 1
    messages = response.get("Messages", [])
    if not messages:
        break
    message = messages[0]
    sqs.delete_message(QueueUrl=queue_url, ReceiptHandle=message["ReceiptHandle"])
    consume_calls += 1
    json.loads(message["Body"])  # "run" the no-op job
    done += 1
    last_delete = time.perf_counter()

print(json.dumps({"jobs": done, "seconds": last_delete - started, "send_calls": send_calls, "consume_calls": consume_calls}))
