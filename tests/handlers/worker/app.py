"""Test handler: SQS batch of S3 notifications (or plain messages), partial batch failures.

S3 records: copy ``in/<key>`` to ``out/<key>`` upper-cased. Plain bodies containing "fail" are
reported as failed items; anything else succeeds. Proves the S3 -> SQS -> Lambda path end to end.
"""

import json
import os
from urllib.parse import unquote_plus

import boto3

s3 = boto3.client("s3")
ssm = boto3.client("ssm")
GREETING = ssm.get_parameter(Name=os.environ["GREETING_PARAMETER"])["Parameter"]["Value"]


def lambda_handler(event, context):
    failures = []
    for record in event["Records"]:
        body = json.loads(record["body"]) if record["body"].startswith("{") else record["body"]
        if isinstance(body, dict) and "Records" in body:
            for s3rec in body["Records"]:
                bucket = s3rec["s3"]["bucket"]["name"]
                key = unquote_plus(s3rec["s3"]["object"]["key"])
                data = s3.get_object(Bucket=bucket, Key=key)["Body"].read()
                out = "out/" + key.removeprefix("in/")
                s3.put_object(
                    Bucket=os.environ["OUT_BUCKET"],
                    Key=out,
                    Body=data.upper(),
                    Metadata={"greeting": GREETING},
                )
        elif isinstance(body, str) and "fail" in body:
            failures.append({"itemIdentifier": record["messageId"]})
    return {"batchItemFailures": failures}
