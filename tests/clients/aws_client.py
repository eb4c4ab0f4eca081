"""AWS clients for keyswap's `aws_sigv4` tests (SPEC §11): boto3, one path through the `aws` CLI, and
a hand-built chunk-signed S3 upload, all configured ONLY by the environment `keyswap env` prints
(AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, HTTPS_PROXY, AWS_CA_BUNDLE, REQUESTS_CA_BUNDLE...)
plus the endpoint given as an argument.

Usage:
    aws_client.py SUBCOMMAND ENDPOINT [options]

ENDPOINT is an --endpoint-url base such as https://s3.us-east-1.amazonaws.com:PORT (the tests map
the AWS names to 127.0.0.1 inside keyswap) or, straight at the oracle, https://127.0.0.1:PORT.

Subcommands (each prints one JSON line, {"ok": true, ...} or {"ok": false, "error": CODE, ...},
and exits 0 on success, 1 on failure):
    s3-put-small [--payload MODE]   PutObject of 1 KiB, ETag checked
    s3-put-10mib [--payload MODE]   PutObject of 10 MiB from a file object (Expect: 100-continue)
    s3-multipart                    CreateMultipartUpload, 3 x UploadPart of 5 MiB, Complete, Head
    s3-get                          PutObject then GetObject, bytes compared
    s3-presigned-get [--presign v4|default]
                                    PutObject, presigned GET URL from boto3, fetched with requests;
                                    v4 (the default here) sets signature_version s3v4, "default" is
                                    botocore's own choice: SigV2 (AWSAccessKeyId=...) in us-east-1
    s3-chunk-signed N_MIB [--trailer] [--tamper]
                                    PutObject of N MiB as STREAMING-AWS4-HMAC-SHA256-PAYLOAD (or its
                                    -TRAILER form with x-amz-checksum-crc32), 64 KiB chunks, built
                                    here (botocore never sends it) and streamed: memory stays flat.
                                    --tamper spoils the second chunk's signature (must be refused).
    sts-get-caller-identity         prints Arn, UserId, Account
    dynamodb-put-get                PutItem then GetItem, item compared
    cli-s3-cp                       `aws s3 cp` of a small file, then HeadObject (boto3) checks its ETag

Payload MODE for the puts: default (botocore's choice: over HTTPS, STREAMING-UNSIGNED-PAYLOAD-TRAILER
with an x-amz-checksum-crc32 trailer), sha256 (a hex body hash in x-amz-content-sha256),
unsigned (UNSIGNED-PAYLOAD), md5 (Content-MD5 header, hence UNSIGNED-PAYLOAD).

Common options: --region (us-east-1), --bucket (keyswap-test), --addressing auto|path|virtual (S3
addressing style; "auto", botocore's default, is path style whenever an endpoint URL is given, so
the host stays ENDPOINT's; "virtual" makes it BUCKET.<ENDPOINT host>, e.g.
keyswap-test.s3.us-east-1.amazonaws.com:PORT; s3-chunk-signed and cli-s3-cp follow the same choice;
--path-style is --addressing path).
The results carry "wire": what botocore put on the wire for each request (payload mode, content and
transfer encodings, trailer, SignedHeaders), as seen by a before-send hook.

To keep the run hermetic, AWS_CONFIG_FILE and AWS_SHARED_CREDENTIALS_FILE default to /dev/null and
AWS_EC2_METADATA_DISABLED to true; retries are off so that a refusal is reported as it came.
"""

import argparse
import base64
import hashlib
import io
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import zlib
from urllib.parse import quote, urlsplit, urlunsplit

for _name, _value in (
    ("AWS_CONFIG_FILE", os.devnull),
    ("AWS_SHARED_CREDENTIALS_FILE", os.devnull),
    ("AWS_EC2_METADATA_DISABLED", "true"),
):
    os.environ.setdefault(_name, _value)

import boto3  # noqa: E402
import requests  # noqa: E402
from botocore.auth import EMPTY_SHA256_HASH, S3SigV4Auth, SigV4Auth  # noqa: E402
from botocore.awsrequest import AWSRequest  # noqa: E402
from botocore.config import Config  # noqa: E402
from botocore.credentials import Credentials  # noqa: E402
from botocore.exceptions import BotoCoreError, ClientError  # noqa: E402

MIB = 1024 * 1024
CHUNK = 64 * 1024


class Failure(Exception):
    def __init__(self, code, message, status=None):
        super().__init__(message)
        self.code, self.message, self.status = code, message, status


def pattern(size, seed=0):
    """Deterministic test bytes."""
    block = hashlib.sha256(f"keyswap-{seed}".encode()).digest() * 2048  # 64 KiB
    whole, rest = divmod(size, len(block))
    return block * whole + block[:rest]


def xml_error(text):
    code = re.search(r"<Code>([^<]*)</Code>", text or "")
    message = re.search(r"<Message>([^<]*)</Message>", text or "")
    return (code.group(1) if code else None), (message.group(1) if message else (text or "")[:200])


class Aws:
    """boto3 clients for one endpoint, and a record of what each request put on the wire."""

    def __init__(self, args):
        self.args = args
        self.wire = []
        self.session = boto3.Session(region_name=args.region)

    def client(self, service, **config):
        s3 = {"addressing_style": self.args.addressing}
        settings = dict(
            region_name=self.args.region,
            retries={"total_max_attempts": 1},
            connect_timeout=10,
            read_timeout=120,
            s3=s3,
        )
        s3.update(config.pop("s3", {}))
        settings.update(config)
        client = self.session.client(service, endpoint_url=self.args.endpoint, config=Config(**settings))
        client.meta.events.register("before-send", self._record)
        return client

    def _record(self, request, **_):
        headers = request.headers
        authorization = headers.get("Authorization", b"")
        if isinstance(authorization, bytes):
            authorization = authorization.decode()
        signed = re.search(r"SignedHeaders=([^,]*)", authorization)
        entry = {"method": request.method, "url": request.url}
        for name in (
            "x-amz-content-sha256",
            "Content-Encoding",
            "Transfer-Encoding",
            "X-Amz-Trailer",
            "X-Amz-Decoded-Content-Length",
            "Content-MD5",
            "Expect",
        ):
            value = headers.get(name)
            if value is not None:
                entry[name.lower()] = value.decode() if isinstance(value, bytes) else value
        checksums = sorted(k.lower() for k in headers.keys() if k.lower().startswith("x-amz-checksum-"))
        if checksums:
            entry["checksum_headers"] = checksums
        if signed:
            entry["signed_headers"] = signed.group(1)
        self.wire.append(entry)

    def s3(self, payload="default"):
        config = {}
        if payload in ("sha256", "md5"):
            config["request_checksum_calculation"] = "when_required"
        elif payload == "unsigned":
            config["request_checksum_calculation"] = "when_required"
            config["s3"] = {"payload_signing_enabled": False}
        return self.client("s3", **config)


def check_etag(got, data):
    expected = '"' + hashlib.md5(data).hexdigest() + '"'
    if got != expected:
        raise Failure("ETagMismatch", f"ETag {got} != {expected}")


def put_args(payload, data):
    args = {}
    if payload == "md5":
        args["ContentMD5"] = base64.b64encode(hashlib.md5(data).digest()).decode()
    return args


# --- S3 through boto3


def s3_put_small(aws, args):
    data = pattern(1024)
    s3 = aws.s3(args.payload)
    response = s3.put_object(Bucket=args.bucket, Key="small.bin", Body=data, **put_args(args.payload, data))
    check_etag(response["ETag"], data)
    return {"bytes": len(data), "etag": response["ETag"]}


def s3_put_10mib(aws, args):
    data = pattern(10 * MIB, seed=10)
    s3 = aws.s3(args.payload)
    response = s3.put_object(
        Bucket=args.bucket, Key="big-10mib.bin", Body=io.BytesIO(data), **put_args(args.payload, data)
    )
    check_etag(response["ETag"], data)
    head = s3.head_object(Bucket=args.bucket, Key="big-10mib.bin")
    if head["ContentLength"] != len(data):
        raise Failure("LengthMismatch", f"HeadObject says {head['ContentLength']} bytes")
    return {"bytes": len(data), "etag": response["ETag"]}


def s3_multipart(aws, args):
    s3 = aws.s3()
    key = "multipart.bin"
    upload = s3.create_multipart_upload(Bucket=args.bucket, Key=key)
    parts, md5s = [], b""
    for number in (1, 2, 3):
        data = pattern(5 * MIB, seed=100 + number)
        response = s3.upload_part(
            Bucket=args.bucket, Key=key, UploadId=upload["UploadId"], PartNumber=number, Body=data
        )
        check_etag(response["ETag"], data)
        parts.append({"PartNumber": number, "ETag": response["ETag"]})
        md5s += hashlib.md5(data).digest()
    done = s3.complete_multipart_upload(
        Bucket=args.bucket, Key=key, UploadId=upload["UploadId"], MultipartUpload={"Parts": parts}
    )
    expected = f'"{hashlib.md5(md5s).hexdigest()}-3"'
    if done["ETag"] != expected:
        raise Failure("ETagMismatch", f"multipart ETag {done['ETag']} != {expected}")
    head = s3.head_object(Bucket=args.bucket, Key=key)
    if head["ContentLength"] != 15 * MIB or head["ETag"] != expected:
        raise Failure("HeadMismatch", f"HeadObject: {head['ContentLength']} bytes, ETag {head['ETag']}")
    return {"parts": 3, "bytes": 15 * MIB, "etag": expected}


def s3_get(aws, args):
    s3 = aws.s3()
    data = pattern(4096, seed=4)
    s3.put_object(Bucket=args.bucket, Key="get-me.bin", Body=data)
    response = s3.get_object(Bucket=args.bucket, Key="get-me.bin")
    body = response["Body"].read()
    if body != data:
        raise Failure("BodyMismatch", f"GetObject returned {len(body)} bytes that differ")
    return {"bytes": len(body), "etag": response["ETag"]}


def s3_presigned_get(aws, args):
    s3 = aws.s3()
    data = pattern(2048, seed=5)
    s3.put_object(Bucket=args.bucket, Key="presigned.bin", Body=data)
    # botocore presigns S3 with SigV2 (AWSAccessKeyId/Signature/Expires) in regions that still have
    # it, us-east-1 included, unless the signature version is set: --presign v4 sets it.
    presigner = aws.client("s3", signature_version="s3v4") if args.presign == "v4" else s3
    url = presigner.generate_presigned_url(
        "get_object", Params={"Bucket": args.bucket, "Key": "presigned.bin"}, ExpiresIn=300
    )
    # requests takes HTTPS_PROXY and REQUESTS_CA_BUNDLE from the environment, like a sandbox's.
    response = requests.get(url, timeout=60)
    if response.status_code != 200:
        code, message = xml_error(response.text)
        raise Failure(code or f"HTTP{response.status_code}", message, response.status_code)
    if response.content != data:
        raise Failure("BodyMismatch", "presigned GET returned other bytes")
    query_keys = sorted(pair.split("=")[0] for pair in urlsplit(url).query.split("&"))
    return {"bytes": len(data), "url_host": urlsplit(url).netloc, "query_keys": query_keys}


# --- S3 chunk-signed upload, built by hand (botocore has no STREAMING-AWS4-HMAC-SHA256-PAYLOAD)


class SeedSigner(S3SigV4Auth):
    """botocore's S3 signer (no path normalisation) that keeps the x-amz-content-sha256 we set,
    the streaming constant, instead of replacing it with a hash of the body."""

    def _modify_request_before_signing(self, request):
        SigV4Auth._modify_request_before_signing(self, request)


class ChunkSignedBody:
    """A file-like, sized aws-chunked body: each chunk signed as it is produced, chaining from the
    seed signature. Only one chunk is in memory at a time."""

    def __init__(self, size, signer, request, seed_signature, trailer, tamper):
        self.size = size
        self._signer, self._request = signer, request
        self._previous = seed_signature
        self._trailer, self._tamper = trailer, tamper
        self.md5 = hashlib.md5()
        self._crc = 0
        self._pieces = self._generate()
        self._buffer = b""
        self.sent = 0

    def _sign(self, lines):
        return self._signer.signature("\n".join(lines), self._request)

    @staticmethod
    def chunk_sizes(size):
        whole, rest = divmod(size, CHUNK)
        return [CHUNK] * whole + ([rest] if rest else [])

    @classmethod
    def encoded_length(cls, size, trailer):
        """The Content-Length of the aws-chunked body (signed before the body is produced)."""
        signature = len(";chunk-signature=") + 64
        length = sum(len(f"{s:x}") + signature + 2 + s + 2 for s in cls.chunk_sizes(size))
        length += 1 + signature + 2  # the final, empty chunk
        if trailer:
            length += len("x-amz-checksum-crc32:") + 8 + 2 + len("x-amz-trailer-signature:") + 64 + 2
        return length + 2

    def __len__(self):
        return self.encoded_length(self.size, self._trailer)

    def _signed_chunk(self, data, index):
        timestamp = self._request.context["timestamp"]
        scope = self._signer.credential_scope(self._request)
        signature = self._sign(
            ["AWS4-HMAC-SHA256-PAYLOAD", timestamp, scope, self._previous, EMPTY_SHA256_HASH,
             hashlib.sha256(data).hexdigest()]
        )
        self._previous = signature
        if self._tamper and index == 1:
            signature = ("0" if signature[0] != "0" else "1") + signature[1:]
        return f"{len(data):x};chunk-signature={signature}\r\n".encode()

    def _generate(self):
        block = pattern(CHUNK, seed=7)
        for index, size in enumerate(self.chunk_sizes(self.size)):
            data = block[:size]
            self.md5.update(data)
            self._crc = zlib.crc32(data, self._crc)
            yield self._signed_chunk(data, index) + data + b"\r\n"
        final = self._signed_chunk(b"", -1)
        if not self._trailer:
            yield final + b"\r\n"
            return
        checksum = base64.b64encode((self._crc & 0xFFFFFFFF).to_bytes(4, "big")).decode()
        canonical = f"x-amz-checksum-crc32:{checksum}\n"
        timestamp = self._request.context["timestamp"]
        scope = self._signer.credential_scope(self._request)
        signature = self._sign(
            ["AWS4-HMAC-SHA256-TRAILER", timestamp, scope, self._previous,
             hashlib.sha256(canonical.encode()).hexdigest()]
        )
        trailer = f"x-amz-checksum-crc32:{checksum}\r\nx-amz-trailer-signature:{signature}\r\n\r\n"
        yield final + trailer.encode()

    def read(self, size=-1):
        while size < 0 or len(self._buffer) < size:
            piece = next(self._pieces, None)
            if piece is None:
                break
            self._buffer += piece
        if size < 0:
            size = len(self._buffer)
        out, self._buffer = self._buffer[:size], self._buffer[size:]
        self.sent += len(out)
        return out


def object_url(endpoint, bucket, key, addressing):
    """The object's URL as botocore would build it from an endpoint URL: path style unless
    virtual addressing is asked for."""
    parts = urlsplit(endpoint)
    if addressing == "virtual":
        return urlunsplit((parts.scheme, f"{bucket}.{parts.netloc}", f"/{quote(key)}", "", ""))
    return urlunsplit((parts.scheme, parts.netloc, f"/{bucket}/{quote(key)}", "", ""))


def s3_chunk_signed(aws, args):
    size = int(args.n_mib * MIB)
    frozen = aws.session.get_credentials().get_frozen_credentials()
    credentials = Credentials(frozen.access_key, frozen.secret_key, frozen.token)
    url = object_url(args.endpoint, args.bucket, f"chunk-signed-{args.n_mib}mib.bin", args.addressing)
    mode = "STREAMING-AWS4-HMAC-SHA256-PAYLOAD" + ("-TRAILER" if args.trailer else "")
    headers = {
        "Content-Encoding": "aws-chunked",
        "X-Amz-Content-SHA256": mode,
        "X-Amz-Decoded-Content-Length": str(size),
        "Content-Type": "application/octet-stream",
    }
    if args.trailer:
        headers["X-Amz-Trailer"] = "x-amz-checksum-crc32"
    request = AWSRequest(method="PUT", url=url, headers=headers)
    signer = SeedSigner(credentials, "s3", args.region)
    request.headers["Content-Length"] = str(ChunkSignedBody.encoded_length(size, args.trailer))
    signer.add_auth(request)
    authorization = request.headers["Authorization"]
    seed = re.search(r"Signature=([0-9a-f]{64})", authorization).group(1)
    body = ChunkSignedBody(size, signer, request, seed, args.trailer, args.tamper)
    wire_headers = {name: value for name, value in request.headers.items()}
    aws.wire.append(
        {
            "method": "PUT",
            "url": url,
            "x-amz-content-sha256": mode,
            "content-encoding": "aws-chunked",
            "signed_headers": re.search(r"SignedHeaders=([^,]*)", authorization).group(1),
        }
    )
    # requests takes HTTPS_PROXY and REQUESTS_CA_BUNDLE from the environment; the sized file-like
    # body is sent with Content-Length, read piece by piece.
    response = requests.put(url, data=body, headers=wire_headers, timeout=300)
    if response.status_code != 200:
        code, message = xml_error(response.text)
        raise Failure(code or f"HTTP{response.status_code}", message, response.status_code)
    if body.sent != len(body):
        raise Failure("LengthMismatch", f"sent {body.sent} of {len(body)} bytes")
    expected = f'"{body.md5.hexdigest()}"'
    if response.headers.get("ETag") != expected:
        raise Failure("ETagMismatch", f"ETag {response.headers.get('ETag')} != {expected}")
    return {"bytes": size, "encoded_bytes": len(body), "mode": mode, "etag": expected}


# --- STS, DynamoDB


def sts_get_caller_identity(aws, args):
    identity = aws.client("sts").get_caller_identity()
    return {"arn": identity["Arn"], "user_id": identity["UserId"], "account": identity["Account"]}


def dynamodb_put_get(aws, args):
    dynamodb = aws.client("dynamodb")
    item = {"id": {"S": "keyswap-item"}, "value": {"S": "hello from the sandbox"}, "n": {"N": "42"}}
    dynamodb.put_item(TableName="keyswap-test", Item=item)
    got = dynamodb.get_item(TableName="keyswap-test", Key={"id": item["id"]})
    if got.get("Item") != item:
        raise Failure("ItemMismatch", f"GetItem returned {got.get('Item')}")
    return {"item": got["Item"]}


# --- the aws CLI


def cli_s3_cp(aws, args):
    aws_cli = os.path.join(os.path.dirname(sys.executable), "aws")
    if not os.path.exists(aws_cli):
        aws_cli = shutil.which("aws")
    if not aws_cli:
        raise Failure("NoAwsCli", "the aws CLI is not installed next to this Python nor on PATH")
    data = pattern(3000, seed=9)
    env = dict(os.environ)
    env.setdefault("AWS_MAX_ATTEMPTS", "1")  # the CLI's legacy retry mode would retry errors
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "upload.bin")
        with open(path, "wb") as f:
            f.write(data)
        if args.addressing != "auto":
            config = os.path.join(tmp, "config")
            with open(config, "w") as f:
                f.write(f"[default]\ns3 =\n  addressing_style = {args.addressing}\n")
            env["AWS_CONFIG_FILE"] = config
        command = [
            aws_cli, "s3", "cp", path, f"s3://{args.bucket}/cli-upload.bin",
            "--endpoint-url", args.endpoint, "--region", args.region, "--no-progress",
        ]
        result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)
    if result.returncode != 0:
        match = re.search(r"An error occurred \(([^)]+)\)", result.stderr)
        raise Failure(match.group(1) if match else "CliFailed", result.stderr.strip()[-500:])
    head = aws.s3().head_object(Bucket=args.bucket, Key="cli-upload.bin")
    check_etag(head["ETag"], data)
    return {"bytes": len(data), "etag": head["ETag"], "cli_output": result.stdout.strip()}


COMMANDS = {
    "s3-put-small": s3_put_small,
    "s3-put-10mib": s3_put_10mib,
    "s3-multipart": s3_multipart,
    "s3-get": s3_get,
    "s3-presigned-get": s3_presigned_get,
    "s3-chunk-signed": s3_chunk_signed,
    "sts-get-caller-identity": sts_get_caller_identity,
    "dynamodb-put-get": dynamodb_put_get,
    "cli-s3-cp": cli_s3_cp,
}


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("command", choices=sorted(COMMANDS))
    parser.add_argument("endpoint", help="e.g. https://s3.us-east-1.amazonaws.com:PORT")
    parser.add_argument("n_mib", nargs="?", type=float, default=1, help="s3-chunk-signed: size in MiB")
    parser.add_argument("--region", default="us-east-1")
    parser.add_argument("--bucket", default="keyswap-test")
    parser.add_argument("--addressing", choices=["auto", "path", "virtual"], default="auto")
    parser.add_argument("--path-style", dest="addressing", action="store_const", const="path",
                        help="the same as --addressing path")
    parser.add_argument("--payload", choices=["default", "sha256", "unsigned", "md5"], default="default")
    parser.add_argument("--presign", choices=["v4", "default"], default="v4",
                        help="s3-presigned-get: SigV4 (default) or botocore's default (SigV2 in us-east-1)")
    parser.add_argument("--trailer", action="store_true", help="s3-chunk-signed: the -TRAILER form")
    parser.add_argument("--tamper", action="store_true", help="s3-chunk-signed: spoil a chunk signature")
    args = parser.parse_args()

    aws = Aws(args)
    result = {"op": args.command}
    try:
        result.update(COMMANDS[args.command](aws, args))
        result["ok"] = True
    except ClientError as e:
        error = e.response.get("Error", {})
        result.update(ok=False, error=error.get("Code"), message=error.get("Message"),
                      status=e.response.get("ResponseMetadata", {}).get("HTTPStatusCode"))
    except Failure as e:
        result.update(ok=False, error=e.code, message=e.message, status=e.status)
    except (BotoCoreError, requests.RequestException, OSError) as e:
        result.update(ok=False, error=type(e).__name__, message=str(e)[:500])
    result["wire"] = aws.wire
    print(json.dumps(result), flush=True)
    sys.exit(0 if result["ok"] else 1)


if __name__ == "__main__":
    main()
