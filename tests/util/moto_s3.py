"""Set-up and read-back for the Firehose tests, through boto3 against a moto server.

Run with the Python of moto's virtual environment (target/moto-venv), which brings
boto3:

    python moto_s3.py ENDPOINT setup BUCKET DELIVERY_STREAM
        creates the S3 bucket and a Direct PUT delivery stream writing into it
    python moto_s3.py ENDPOINT read BUCKET
        prints every object of the bucket as JSON, sorted by key:
        [{"key": "...", "data": "<base64>"}, ...]

Credentials and region come from the environment (the tests set dummy ones).
"""

import base64
import json
import sys

import boto3

ROLE_ARN = "arn:aws:iam::123456789012:role/firehose-test"


def client(endpoint, service):
    return boto3.client(service, endpoint_url=endpoint, region_name="us-east-1")


def setup(endpoint, bucket, stream):
    client(endpoint, "s3").create_bucket(Bucket=bucket)
    client(endpoint, "firehose").create_delivery_stream(
        DeliveryStreamName=stream,
        DeliveryStreamType="DirectPut",
        ExtendedS3DestinationConfiguration={
            "RoleARN": ROLE_ARN,
            "BucketARN": f"arn:aws:s3:::{bucket}",
            "Prefix": f"{stream}/",
            "BufferingHints": {"SizeInMBs": 1, "IntervalInSeconds": 60},
            "CompressionFormat": "UNCOMPRESSED",
        },
    )
    print(json.dumps({"bucket": bucket, "delivery_stream": stream}))


def read(endpoint, bucket):
    s3 = client(endpoint, "s3")
    objects = []
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket):
        for item in page.get("Contents", []):
            body = s3.get_object(Bucket=bucket, Key=item["Key"])["Body"].read()
            objects.append(
                {"key": item["Key"], "data": base64.b64encode(body).decode("ascii")}
            )
    objects.sort(key=lambda o: o["key"])
    json.dump(objects, sys.stdout)


def main(argv):
    if len(argv) >= 5 and argv[2] == "setup":
        setup(argv[1], argv[3], argv[4])
    elif len(argv) >= 4 and argv[2] == "read":
        read(argv[1], argv[3])
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main(sys.argv)
