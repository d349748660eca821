"""Whether an S3-compatible store decides conditional PUTs atomically, the
property several nmr instances on one bucket rely on
(docs/s3-conditional-writes.md).

Each round sends WRITERS create-only PUTs (`If-None-Match: *`) of different
bodies to one fresh key, released together, then WRITERS `If-Match` PUTs
with one shared ETag to another key. An atomic store lets exactly one of
each win; the script counts the rounds where two or more won (a store
nmr must not share between instances) and the rounds where none did
(errors or timeouts, which do not count against the store).

Usage: python3 scripts/s3_race_check.py ENDPOINT BUCKET [WRITERS] [ROUNDS]
  e.g. python3 scripts/s3_race_check.py http://127.0.0.1:9000 nmr 2 500
Credentials come from AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY (any
value for moto). Needs boto3 (moto's server installs it). The bucket is
created if missing; the objects written are left under `race-check/`.
"""

import os
import sys
import threading
import uuid
from concurrent.futures import ThreadPoolExecutor

import boto3
import botocore
from botocore.config import Config


def main():
    endpoint, bucket = sys.argv[1], sys.argv[2]
    writers = int(sys.argv[3]) if len(sys.argv) > 3 else 2
    rounds = int(sys.argv[4]) if len(sys.argv) > 4 else 300
    local = threading.local()

    def client():
        if not hasattr(local, "s3"):
            local.s3 = boto3.session.Session().client(
                "s3", endpoint_url=endpoint, region_name="us-east-1",
                aws_access_key_id=os.environ.get("AWS_ACCESS_KEY_ID", "k"),
                aws_secret_access_key=os.environ.get("AWS_SECRET_ACCESS_KEY", "s"),
                config=Config(retries={"max_attempts": 0}, s3={"addressing_style": "path"}))
        return local.s3

    def put(key, body, **conditions):
        try:
            return 200, client().put_object(Bucket=bucket, Key=key, Body=body, **conditions)["ETag"]
        except botocore.exceptions.ClientError as e:
            return e.response["ResponseMetadata"]["HTTPStatusCode"], None

    try:
        client().create_bucket(Bucket=bucket)
    except botocore.exceptions.ClientError as e:
        if e.response["Error"]["Code"] not in ("BucketAlreadyOwnedByYou", "BucketAlreadyExists"):
            sys.exit(f"creating the bucket {bucket} failed: {e}")
    two_creates = two_updates = none = 0
    with ThreadPoolExecutor(writers) as pool:
        for _ in range(rounds):
            key = f"race-check/{uuid.uuid4().hex}"
            for conditions in ({"IfNoneMatch": "*"}, None):
                if conditions is None:
                    status, etag = put(key + ".cas", b"start")
                    if status != 200:
                        sys.exit(f"a plain PUT of {key}.cas failed ({status})")
                    conditions, target = {"IfMatch": etag}, key + ".cas"
                else:
                    target = key
                start = threading.Barrier(writers)

                def race(i, target=target, conditions=conditions, start=start):
                    start.wait()
                    return put(target, b"writer %d " % i * 100, **conditions)[0]

                won = list(pool.map(race, range(writers))).count(200)
                none += won == 0
                if won > 1 and "IfNoneMatch" in conditions:
                    two_creates += 1
                elif won > 1:
                    two_updates += 1
    print(f"{endpoint}: {rounds} rounds of {writers} racing writers: "
          f"two or more create-only winners in {two_creates}, "
          f"two or more If-Match winners in {two_updates}, no winner in {none}")
    sys.exit(1 if two_creates or two_updates else 0)


if __name__ == "__main__":
    main()
