"""A local HTTPS stand-in for AWS that verifies SigV4 with botocore's own signer: the oracle for
keyswap's `aws_sigv4` credentials (SPEC §11).

Usage:
    aws_upstream.py --cert CERT --key KEY --port-file FILE --access-key-id ID --secret SECRET
                    [--session-token TOKEN] [--log FILE] [--port N]

It binds 127.0.0.1 (port 0 unless --port), serves TLS, HTTP/1.1 with keep-alive, one thread per
connection, and writes the port to FILE (atomically) once listening. It knows only the REAL
credentials: every request must be signed with them, as keyswap re-signs it.

How a signature is checked: the request is rebuilt as a botocore AWSRequest from what arrived (the
method, the request-target exactly as received, only the headers listed in SignedHeaders, the
payload hash), and botocore's SigV4Auth / S3SigV4Auth (or SigV4QueryAuth / S3SigV4QueryAuth for
presigned URLs) computes the canonical request, the string to sign and the signature with the real
secret; the result must equal the signature that arrived. Chunk signatures of the streaming modes are
chained from the seed signature with botocore's key derivation.

Refusals answer in AWS's own shapes (S3/STS XML `<Error><Code>`, DynamoDB JSON `__type`), with the
same codes for every service so that tests can grep one set:
    403 InvalidAccessKeyId     the credential's key id is not the real one (e.g. the placeholder)
    403 SignatureDoesNotMatch  header, query, chunk or trailer signature wrong (the XML carries
                               <CanonicalRequest> and <StringToSign>, as S3 does)
    403 InvalidToken           x-amz-security-token missing, unsigned or wrong while --session-token
                               is set, or present while it is not
    403 AccessDenied           no signature at all, x-amz-* headers present but not signed, expired URL
    403 RequestTimeTooSkewed   x-amz-date more than 15 minutes away
    400 XAmzContentSHA256Mismatch / BadDigest / IncompleteBody / AuthorizationHeaderMalformed /
        InvalidRequest / MalformedTrailerError   body or framing problems
Every request, accepted or refused, is one JSON line in --log (and on stderr): time, method, host,
target, service, status, code (refusals), key_id, signed_headers, payload (the x-amz-content-sha256
mode), content-encoding / transfer-encoding / x-amz-trailer / x-amz-security-token when present,
detail (for SignatureDoesNotMatch: the canonical request the oracle expected).

What it serves:
  * S3 (any host not recognised below; virtual-host `BUCKET.s3[.-]....amazonaws.com` or path style):
    PutObject, GetObject, HeadObject, DeleteObject, CreateBucket (accepted), CreateMultipartUpload,
    UploadPart, CompleteMultipartUpload, AbortMultipartUpload, presigned GET/PUT/HEAD (SigV4
    X-Amz-Credential=..., and SigV2 AWSAccessKeyId=... as boto3 makes by default in us-east-1,
    verified with botocore's HmacV1QueryAuth; SigV2 Authorization headers are refused). Buckets
    exist on demand. Bodies up to 1 MiB are kept; larger ones are hashed while streaming (sha256,
    md5 for the ETag, length) and not kept: GetObject of those answers 501.
    Payload modes (x-amz-content-sha256): a hex sha256 (the body must hash to it),
    UNSIGNED-PAYLOAD, and aws-chunked bodies: STREAMING-UNSIGNED-PAYLOAD-TRAILER,
    STREAMING-AWS4-HMAC-SHA256-PAYLOAD and STREAMING-AWS4-HMAC-SHA256-PAYLOAD-TRAILER (every chunk
    and trailer signature verified, x-amz-decoded-content-length checked, memory flat). Content-MD5
    and x-amz-checksum-{crc32,crc32c,crc64nvme,sha1,sha256}, as headers or aws-chunked trailers,
    are verified against the decoded body.
  * STS GetCallerIdentity (host sts.*, or a POST with a form body): the Arn and UserId name the
    access key id that signed the request.
  * DynamoDB (host dynamodb.*, or X-Amz-Target DynamoDB_20120810.*): PutItem, GetItem, in memory.
  * /echo-auth on any host and method: 200 with a JSON body holding the Authorization header, the
    x-amz-security-token header and the access key id as they arrived, and whether the signature
    verified (a test asserts keyswap masks the real values on the way back).
"""

import argparse
import base64
import datetime
import hashlib
import hmac
import json
import os
import re
import socketserver
import ssl
import sys
import threading
import time
import uuid
import zlib
from http.server import BaseHTTPRequestHandler, HTTPServer
from urllib.parse import parse_qsl, unquote, urlsplit
from xml.etree import ElementTree
from xml.sax.saxutils import escape

from botocore.auth import (
    EMPTY_SHA256_HASH,
    HmacV1QueryAuth,
    S3SigV4Auth,
    S3SigV4QueryAuth,
    SigV4Auth,
    SigV4QueryAuth,
)
from botocore.awsrequest import AWSRequest
from botocore.compat import HTTPHeaders
from botocore.credentials import Credentials

KEEP_LIMIT = 1024 * 1024  # bodies larger than this are hashed, not kept
SMALL_BODY_LIMIT = 1024 * 1024  # STS / DynamoDB / S3 XML bodies are read whole, up to this
MAX_SKEW = datetime.timedelta(minutes=15)
ACCOUNT_ID = "123456789012"
S3_NS = "http://s3.amazonaws.com/doc/2006-03-01/"

UNSIGNED_PAYLOAD = "UNSIGNED-PAYLOAD"
STREAMING_UNSIGNED_TRAILER = "STREAMING-UNSIGNED-PAYLOAD-TRAILER"
STREAMING_SIGNED = "STREAMING-AWS4-HMAC-SHA256-PAYLOAD"
STREAMING_SIGNED_TRAILER = "STREAMING-AWS4-HMAC-SHA256-PAYLOAD-TRAILER"
STREAMING_MODES = (STREAMING_UNSIGNED_TRAILER, STREAMING_SIGNED, STREAMING_SIGNED_TRAILER)
HEX_SHA256 = re.compile(r"^[0-9a-f]{64}$")


class AwsError(Exception):
    """A refusal, answered in the service's error shape. `fatal`: the connection's framing is lost."""

    def __init__(self, status, code, message, fatal=False, extra=None):
        super().__init__(f"{code}: {message}")
        self.status = status
        self.code = code
        self.message = message
        self.fatal = fatal
        self.extra = extra or {}


# --------------------------------------------------------------------------------------------
# Checksums (x-amz-checksum-*): big-endian digests, base64 on the wire, as botocore sends them.


class _ReflectedCrc:
    """Table-driven reflected CRC (pure Python; only used for algorithms zlib lacks)."""

    _tables = {}

    def __init__(self, poly, width):
        self._width = width
        self._mask = (1 << width) - 1
        self._crc = self._mask
        key = (poly, width)
        if key not in self._tables:
            table = []
            for i in range(256):
                c = i
                for _ in range(8):
                    c = (c >> 1) ^ poly if c & 1 else c >> 1
                table.append(c)
            self._tables[key] = table
        self._table = self._tables[key]

    def update(self, data):
        crc, table = self._crc, self._table
        for byte in data:
            crc = table[(crc ^ byte) & 0xFF] ^ (crc >> 8)
        self._crc = crc

    def digest(self):
        return (self._crc ^ self._mask).to_bytes(self._width // 8, "big")


class _Crc32:
    def __init__(self):
        self._crc = 0

    def update(self, data):
        self._crc = zlib.crc32(data, self._crc)

    def digest(self):
        return (self._crc & 0xFFFFFFFF).to_bytes(4, "big")


CHECKSUMS = {
    "crc32": _Crc32,
    "crc32c": lambda: _ReflectedCrc(0x82F63B78, 32),
    "crc64nvme": lambda: _ReflectedCrc(0x9A6C9329AC4BC9B5, 64),
    "sha1": hashlib.sha1,
    "sha256": hashlib.sha256,
}


class BodySummary:
    """What the server keeps of a decoded body: length, sha256, md5 (the ETag), the checksums it
    was asked to verify, and the bytes themselves while they fit in KEEP_LIMIT."""

    def __init__(self, checksum_algorithms=()):
        self.length = 0
        self.sha256 = hashlib.sha256()
        self.md5 = hashlib.md5()
        self.checksums = {name: CHECKSUMS[name]() for name in checksum_algorithms}
        self.data = bytearray()

    def update(self, chunk):
        self.length += len(chunk)
        self.sha256.update(chunk)
        self.md5.update(chunk)
        for checksum in self.checksums.values():
            checksum.update(chunk)
        if self.data is not None:
            if self.length <= KEEP_LIMIT:
                self.data += chunk
            else:
                self.data = None

    def checksum_b64(self, name):
        return base64.b64encode(self.checksums[name].digest()).decode()


# --------------------------------------------------------------------------------------------
# Request bodies: the HTTP framing (Content-Length or chunked), then aws-chunked on top of it.


class BodyStream:
    """The request body with its HTTP/1.1 framing removed, read in pieces."""

    def __init__(self, rfile, headers):
        self._rfile = rfile
        self._chunked = "chunked" in headers.get("Transfer-Encoding", "").lower()
        self._left = 0 if self._chunked else int(headers.get("Content-Length") or 0)
        self._eof = False
        self._buf = bytearray()
        self.started = False

    def _read_framed(self, n):
        if self._chunked:
            if self._eof:
                return b""
            if self._left == 0:
                line = self._rfile.readline(1024)
                try:
                    size = int(line.split(b";")[0].strip(), 16)
                except ValueError:
                    raise AwsError(400, "IncompleteBody", "bad HTTP chunk header", fatal=True)
                if size == 0:
                    while self._rfile.readline(8192) not in (b"\r\n", b"\n", b""):
                        pass  # HTTP trailers: none expected, ignored
                    self._eof = True
                    return b""
                self._left = size
            data = self._rfile.read(min(n, self._left))
            if not data:
                raise AwsError(400, "IncompleteBody", "body ended inside an HTTP chunk", fatal=True)
            self._left -= len(data)
            if self._left == 0 and self._rfile.read(2) != b"\r\n":
                raise AwsError(400, "IncompleteBody", "HTTP chunk not ended by CRLF", fatal=True)
            return data
        if self._left == 0:
            return b""
        data = self._rfile.read(min(n, self._left))
        if not data:
            raise AwsError(400, "IncompleteBody", "body shorter than Content-Length", fatal=True)
        self._left -= len(data)
        return data

    def read(self, n=65536):
        """Up to n bytes; b"" at the end of the body."""
        self.started = True
        if self._buf:
            data = bytes(self._buf[:n])
            del self._buf[:n]
            return data
        return self._read_framed(n)

    def read_exact(self, n):
        parts, want = [], n
        while want:
            data = self.read(want)
            if not data:
                raise AwsError(400, "IncompleteBody", f"body ended {want} bytes early", fatal=True)
            parts.append(data)
            want -= len(data)
        return b"".join(parts)

    def readline(self, limit=8192):
        """A line with its line end; b"" at the end of the body."""
        self.started = True
        while b"\n" not in self._buf and len(self._buf) < limit:
            data = self._read_framed(4096)
            if not data:
                break
            self._buf += data
        end = self._buf.find(b"\n")
        end = len(self._buf) if end < 0 else end + 1
        if end > limit:
            raise AwsError(400, "IncompleteBody", "line too long in body", fatal=True)
        line = bytes(self._buf[:end])
        del self._buf[:end]
        return line

    def read_all(self, limit=SMALL_BODY_LIMIT):
        data = bytearray()
        while chunk := self.read():
            data += chunk
            if len(data) > limit:
                raise AwsError(400, "InvalidRequest", "body too large for this operation")
        return bytes(data)

    def drain(self):
        while self.read():
            pass


class ChunkChain:
    """Verifies chunk and trailer signatures, each chaining from the previous one, starting at the
    seed signature of the headers. Keys and scope come from the verified header signature."""

    def __init__(self, auth):
        self._auth = auth
        self.previous = auth.signature
        self.count = 0

    def _expected(self, lines):
        return self._auth.signer.signature("\n".join(lines), self._auth.aws_request)

    def verify_chunk(self, data, signature):
        expected = self._expected(
            [
                "AWS4-HMAC-SHA256-PAYLOAD",
                self._auth.amz_date,
                self._auth.scope,
                self.previous,
                EMPTY_SHA256_HASH,
                hashlib.sha256(data).hexdigest(),
            ]
        )
        self._check(expected, signature, f"chunk {self.count} ({len(data)} bytes)")
        self.previous = expected
        self.count += 1

    def verify_trailer(self, trailers, signature):
        canonical = "".join(f"{name}:{value}\n" for name, value in sorted(trailers.items()))
        expected = self._expected(
            [
                "AWS4-HMAC-SHA256-TRAILER",
                self._auth.amz_date,
                self._auth.scope,
                self.previous,
                hashlib.sha256(canonical.encode()).hexdigest(),
            ]
        )
        self._check(expected, signature, "trailer")

    @staticmethod
    def _check(expected, signature, what):
        if signature is None or not (signature.isascii() and hmac.compare_digest(expected, signature)):
            raise AwsError(
                403,
                "SignatureDoesNotMatch",
                f"The {what} signature we calculated does not match the signature you provided.",
            )


def aws_chunks(body, mode, auth, declared_trailers):
    """Decode an aws-chunked body, yielding its data chunks; returns the trailers (a dict).

    Unsigned:  HEX\\r\\nDATA\\r\\n ... 0\\r\\n[name:value\\r\\n...]\\r\\n
    Signed:    HEX;chunk-signature=SIG\\r\\nDATA\\r\\n ... 0;chunk-signature=SIG\\r\\n
               [name:value\\r\\n... x-amz-trailer-signature:SIG\\r\\n]\\r\\n
    """
    signed = mode in (STREAMING_SIGNED, STREAMING_SIGNED_TRAILER)
    chain = ChunkChain(auth) if signed else None
    while True:
        line = body.readline(4096)
        if not line.endswith(b"\r\n"):
            raise AwsError(400, "IncompleteBody", "aws-chunked: chunk header expected", fatal=True)
        size_text, _, extension = line[:-2].decode("latin-1").partition(";")
        try:
            size = int(size_text, 16)
        except ValueError:
            raise AwsError(400, "IncompleteBody", f"aws-chunked: bad chunk size {size_text!r}", fatal=True)
        signature = None
        if extension:
            name, _, value = extension.partition("=")
            if name.strip() != "chunk-signature":
                raise AwsError(400, "IncompleteBody", f"aws-chunked: unknown extension {name!r}")
            signature = value.strip()
        if not signed and signature is not None:
            raise AwsError(400, "InvalidRequest", f"chunk signature in {mode} body")
        data = body.read_exact(size) if size else b""
        if signed:
            chain.verify_chunk(data, signature)
        if size == 0:
            break
        if body.read_exact(2) != b"\r\n":
            raise AwsError(400, "IncompleteBody", "aws-chunked: chunk data not ended by CRLF", fatal=True)
        yield data

    trailers, trailer_signature = {}, None
    while True:
        line = body.readline(8192)
        if line in (b"\r\n", b""):  # tolerate a body that ends without the last CRLF
            break
        name, sep, value = line.decode("latin-1").rstrip("\r\n").partition(":")
        if not sep:
            raise AwsError(400, "MalformedTrailerError", f"bad trailer line {line[:80]!r}")
        name, value = name.strip().lower(), value.strip()
        if name == "x-amz-trailer-signature":
            trailer_signature = value
        else:
            trailers[name] = value
    if body.read(1):
        raise AwsError(400, "IncompleteBody", "data after the aws-chunked trailer", fatal=True)
    if set(trailers) != set(declared_trailers):
        raise AwsError(
            400,
            "MalformedTrailerError",
            f"trailers {sorted(trailers)} differ from x-amz-trailer {sorted(declared_trailers)}",
        )
    if mode == STREAMING_SIGNED_TRAILER:
        chain.verify_trailer(trailers, trailer_signature)
    elif trailer_signature is not None:
        raise AwsError(400, "MalformedTrailerError", f"x-amz-trailer-signature in a {mode} body")
    return trailers


def consume_body(req, auth, expected_checksums):
    """Read and check the whole body of a request (streaming), returning its BodySummary.

    Checks: the payload mode (hex hash / aws-chunked signatures), x-amz-decoded-content-length,
    Content-MD5 and x-amz-checksum-* headers and trailers."""
    mode = req.payload_mode
    declared_trailers = [t.strip().lower() for t in req.header("x-amz-trailer", "").split(",") if t.strip()]
    algorithms = set(expected_checksums)
    for name in declared_trailers:
        if not name.startswith("x-amz-checksum-") or name[15:] not in CHECKSUMS:
            raise AwsError(400, "InvalidRequest", f"unsupported trailer {name}")
        algorithms.add(name[15:])
    summary = BodySummary(sorted(algorithms))

    if mode in STREAMING_MODES:
        if mode != STREAMING_UNSIGNED_TRAILER and auth.kind != "header":
            raise AwsError(400, "InvalidRequest", f"{mode} needs an Authorization header")
        if mode != STREAMING_SIGNED and not declared_trailers:
            raise AwsError(400, "InvalidRequest", f"{mode} without x-amz-trailer")
        decoder = aws_chunks(req.body, mode, auth, declared_trailers)
        while True:
            try:
                summary.update(next(decoder))
            except StopIteration as done:
                trailers = done.value
                break
        decoded = req.header("x-amz-decoded-content-length")
        if mode != STREAMING_UNSIGNED_TRAILER and not decoded:
            raise AwsError(411, "MissingContentLength", "x-amz-decoded-content-length is required")
        if decoded and (not decoded.isdigit() or int(decoded) != summary.length):
            raise AwsError(
                400,
                "IncompleteBody",
                f"x-amz-decoded-content-length {decoded} but {summary.length} bytes decoded",
            )
        for name, value in trailers.items():
            if summary.checksum_b64(name[15:]) != value:
                raise AwsError(400, "BadDigest", f"trailer {name} does not match the body")
    else:
        if declared_trailers:
            raise AwsError(400, "InvalidRequest", f"x-amz-trailer with payload mode {mode}")
        while chunk := req.body.read():
            summary.update(chunk)
        if HEX_SHA256.match(mode) and summary.sha256.hexdigest() != mode:
            raise AwsError(
                400,
                "XAmzContentSHA256Mismatch",
                "The provided 'x-amz-content-sha256' header does not match what was computed.",
            )

    for name in expected_checksums:
        if summary.checksum_b64(name) != req.header(f"x-amz-checksum-{name}"):
            raise AwsError(400, "BadDigest", f"x-amz-checksum-{name} does not match the body")
    md5 = req.header("content-md5")
    if md5 and base64.b64encode(summary.md5.digest()).decode() != md5:
        raise AwsError(400, "BadDigest", "The Content-MD5 you specified did not match what we received.")
    return summary


# --------------------------------------------------------------------------------------------
# Signature verification with botocore's signer classes.


class _ExactHeaders:
    """Make a botocore signer canonicalise exactly the headers given (those in SignedHeaders, as they
    arrived: no blacklist, no added host) with the payload hash given, instead of preparing a request
    of its own. Everything else (canonical URI and query, header canonicalisation, string to sign,
    key derivation) is botocore's."""

    def headers_to_sign(self, request):
        headers = HTTPHeaders()
        for name, value in request.headers.items():
            headers[name.lower()] = value
        return headers

    def payload(self, request):
        return request.context["payload_hash"]


class HeaderVerifier(_ExactHeaders, SigV4Auth):
    pass


class S3HeaderVerifier(_ExactHeaders, S3SigV4Auth):
    pass


class QueryVerifier(_ExactHeaders, SigV4QueryAuth):
    pass


class S3QueryVerifier(_ExactHeaders, S3SigV4QueryAuth):
    pass


class Auth:
    """What a verified (or, for /echo-auth, merely parsed) signature told us."""

    kind = None  # "header" | "query" (SigV4 presigned) | "query-v2" (SigV2 presigned) | None
    key_id = amz_date = region = service = scope = scope_date = signature = None
    expires = None  # X-Amz-Expires (seconds), SigV4 presigned
    expires_at = None  # Expires (epoch seconds), SigV2 presigned
    signed_headers = ()
    signer = aws_request = None  # set once verified: they sign the chunks that follow


def _parse_authorization(value):
    algorithm, _, rest = value.strip().partition(" ")
    if algorithm != "AWS4-HMAC-SHA256":
        raise AwsError(400, "AuthorizationHeaderMalformed", f"unsupported algorithm {algorithm!r}")
    fields = {}
    for part in rest.split(","):
        name, sep, val = part.strip().partition("=")
        if sep:
            fields[name.strip()] = val.strip()
    missing = {"Credential", "SignedHeaders", "Signature"} - set(fields)
    if missing:
        raise AwsError(400, "AuthorizationHeaderMalformed", f"Authorization lacks {sorted(missing)}")
    return fields["Credential"], fields["SignedHeaders"], fields["Signature"]


def _parse_amz_date(text):
    try:
        return datetime.datetime.strptime(text, "%Y%m%dT%H%M%SZ").replace(tzinfo=datetime.timezone.utc)
    except (TypeError, ValueError):
        raise AwsError(403, "AccessDenied", f"bad or missing X-Amz-Date {text!r}")


def parse_auth(req):
    """The signature's parts, from the Authorization header or the presigned query; no checks."""
    auth = Auth()
    authorization = req.header("authorization")
    query_params = dict(parse_qsl(req.query, keep_blank_values=True))
    if authorization and authorization.startswith("AWS "):
        raise AwsError(400, "InvalidRequest", "SigV2 Authorization headers are not supported here")
    if authorization:
        auth.kind = "header"
        credential, signed_headers, auth.signature = _parse_authorization(authorization)
        auth.amz_date = req.header("x-amz-date")
    elif "X-Amz-Algorithm" in query_params:
        auth.kind = "query"
        if query_params["X-Amz-Algorithm"] != "AWS4-HMAC-SHA256":
            raise AwsError(400, "AuthorizationQueryParametersError", "unsupported X-Amz-Algorithm")
        try:
            credential = query_params["X-Amz-Credential"]
            signed_headers = query_params["X-Amz-SignedHeaders"]
            auth.signature = query_params["X-Amz-Signature"]
            auth.amz_date = query_params["X-Amz-Date"]
            auth.expires = int(query_params["X-Amz-Expires"])
        except (KeyError, ValueError) as e:
            raise AwsError(400, "AuthorizationQueryParametersError", f"presigned query lacks {e}")
    elif "AWSAccessKeyId" in query_params:
        auth.kind = "query-v2"
        auth.key_id = query_params["AWSAccessKeyId"]
        auth.signature = query_params.get("Signature")
        auth.expires_at = query_params.get("Expires", "")
        auth.service = "s3"
        return auth
    else:
        return auth
    parts = credential.split("/")
    if len(parts) != 5 or parts[4] != "aws4_request":
        raise AwsError(400, "AuthorizationHeaderMalformed", f"bad Credential {credential!r}")
    auth.key_id, scope_date, auth.region, auth.service, _ = parts
    auth.scope = "/".join(parts[1:])
    auth.scope_date = scope_date
    auth.signed_headers = [h for h in signed_headers.lower().split(";") if h]
    return auth


def verify(req, auth, config, service, payload_hash):
    """Check auth (from parse_auth) against the real credentials; raises AwsError."""
    if auth.kind is None:
        raise AwsError(403, "AccessDenied", "Anonymous access is not allowed here.")
    if auth.key_id != config.access_key_id:
        raise AwsError(
            403, "InvalidAccessKeyId", "The AWS Access Key Id you provided does not exist in our records."
        )
    if auth.kind == "query-v2":
        return verify_sigv2_query(req, auth, config)
    if service is not None and auth.service != service:
        raise AwsError(
            400,
            "AuthorizationHeaderMalformed",
            f"Credential should be scoped to correct service: '{service}'.",
        )
    when = _parse_amz_date(auth.amz_date)
    if auth.scope_date != auth.amz_date[:8]:
        raise AwsError(400, "AuthorizationHeaderMalformed", "Credential date does not match X-Amz-Date.")
    now = datetime.datetime.now(datetime.timezone.utc)
    if auth.kind == "header" and abs(now - when) > MAX_SKEW:
        raise AwsError(
            403, "RequestTimeTooSkewed", "The difference between the request time and now is too large."
        )
    expiry = when + datetime.timedelta(seconds=auth.expires or 0)
    if auth.kind == "query" and not (when - MAX_SKEW <= now <= expiry):
        raise AwsError(403, "AccessDenied", "Request has expired")
    if "host" not in auth.signed_headers:
        raise AwsError(403, "AccessDenied", "host must be a signed header")
    present = {name.lower() for name in req.headers.keys()}
    if auth.kind == "header":
        unsigned = sorted(n for n in present if n.startswith("x-amz-") and n not in auth.signed_headers)
        if unsigned:
            raise AwsError(
                403,
                "AccessDenied",
                f"There were headers present in the request which were not signed: {unsigned}",
            )
    missing = [h for h in auth.signed_headers if h not in present]
    if missing:
        raise AwsError(403, "SignatureDoesNotMatch", f"signed headers missing from the request: {missing}")

    query_params = dict(parse_qsl(req.query, keep_blank_values=True))
    if auth.kind == "header":
        token = req.header("x-amz-security-token")
    else:
        token = query_params.get("X-Amz-Security-Token")
    if config.session_token is not None:
        if token is None:
            raise AwsError(403, "InvalidToken", "The request lacks the x-amz-security-token of the session.")
        if token != config.session_token:
            raise AwsError(403, "InvalidToken", "The provided token is malformed or otherwise invalid.")
        if auth.kind == "header" and "x-amz-security-token" not in auth.signed_headers:
            raise AwsError(403, "InvalidToken", "x-amz-security-token must be signed.")
    elif token is not None:
        raise AwsError(403, "InvalidToken", "The provided token is malformed or otherwise invalid.")

    # Rebuild the request botocore would have signed: the target exactly as received (minus the
    # signature itself for a presigned URL), the signed headers only, the payload hash.
    query = req.query
    if auth.kind == "query":
        query = "&".join(p for p in req.query.split("&") if not p.startswith("X-Amz-Signature="))
    url = f"https://{req.header('host') or 'localhost'}{req.path}" + (f"?{query}" if query else "")
    aws_request = AWSRequest(method=req.method, url=url)
    for name, value in req.headers.items():
        if name.lower() in auth.signed_headers:
            aws_request.headers[name] = value
    aws_request.context["timestamp"] = auth.amz_date
    aws_request.context["payload_hash"] = payload_hash
    s3 = auth.service == "s3"
    signer_class = {
        ("header", False): HeaderVerifier,
        ("header", True): S3HeaderVerifier,
        ("query", False): QueryVerifier,
        ("query", True): S3QueryVerifier,
    }[(auth.kind, s3)]
    credentials = Credentials(config.access_key_id, config.secret, config.session_token)
    signer = signer_class(credentials, auth.service, auth.region)
    canonical_request = signer.canonical_request(aws_request)
    string_to_sign = signer.string_to_sign(aws_request, canonical_request)
    expected = signer.signature(string_to_sign, aws_request)
    if not (auth.signature.isascii() and hmac.compare_digest(expected, auth.signature)):
        raise AwsError(
            403,
            "SignatureDoesNotMatch",
            "The request signature we calculated does not match the signature you provided.",
            extra={"CanonicalRequest": canonical_request, "StringToSign": string_to_sign},
        )
    auth.signer, auth.aws_request = signer, aws_request
    return auth


class S3V2QueryVerifier(HmacV1QueryAuth):
    """botocore's SigV2 presigner with the Expires that arrived instead of one of its own."""

    def __init__(self, credentials, expires_at):
        super().__init__(credentials)
        self._expires_at = expires_at

    def _get_date(self):
        return self._expires_at


def verify_sigv2_query(req, auth, config):
    """A SigV2 presigned URL (AWSAccessKeyId, Signature, Expires): what boto3 makes by default for
    S3 in a region that still has SigV2, such as us-east-1, unless signature_version is s3v4."""
    if auth.key_id != config.access_key_id:
        raise AwsError(
            403, "InvalidAccessKeyId", "The AWS Access Key Id you provided does not exist in our records."
        )
    if not auth.expires_at.isdigit() or int(auth.expires_at) < time.time():
        raise AwsError(403, "AccessDenied", "Request has expired")
    query_params = dict(parse_qsl(req.query, keep_blank_values=True))
    token = query_params.get("x-amz-security-token")
    if token != config.session_token:
        raise AwsError(403, "InvalidToken", "The provided token is malformed or otherwise invalid.")
    # At signing time these were headers; botocore moved them into the query.
    headers = HTTPHeaders()
    for name, value in query_params.items():
        if name.lower().startswith("x-amz-") or name.lower() in ("content-md5", "content-type"):
            headers[name.lower()] = value
    bucket, _ = s3_location(req)
    auth_path = f"/{bucket}{req.path}" if s3_virtual_host(req) else None
    credentials = Credentials(config.access_key_id, config.secret, config.session_token)
    signer = S3V2QueryVerifier(credentials, auth.expires_at)
    split = urlsplit(f"https://{req.header('host') or 'localhost'}{req.target}")
    string_to_sign = signer.canonical_string(req.method, split, headers, auth_path=auth_path)
    expected = signer.sign_string(string_to_sign)
    signature = auth.signature or ""
    if not (signature.isascii() and hmac.compare_digest(expected, signature)):
        raise AwsError(
            403,
            "SignatureDoesNotMatch",
            "The request signature we calculated does not match the signature you provided.",
            extra={"StringToSign": string_to_sign},
        )
    return auth


def s3_virtual_host(req):
    """The bucket of a virtual-host style S3 request (BUCKET.s3[.-]...amazonaws.com), or None."""
    match = re.match(r"^(.+)\.s3[.-].*amazonaws\.com$", req.hostname)
    return match.group(1) if match else None


def s3_location(req):
    """(bucket, key) of an S3 request, virtual-host or path style."""
    path = unquote(req.path)
    bucket = s3_virtual_host(req)
    if bucket:
        return bucket, path[1:]
    bucket, _, key = path[1:].partition("/")
    return bucket, key


# --------------------------------------------------------------------------------------------
# The services.


class Request:
    """One request as it arrived: the request-target verbatim, headers, and the body stream."""

    def __init__(self, handler):
        self.method = handler.command
        # The request-target from the request line itself: http.server rewrites a leading "//".
        parts = handler.requestline.split(" ")
        target = parts[1] if len(parts) == 3 else handler.path
        if "://" in target.split("?")[0]:  # absolute-form: keep the origin-form part
            target = "/" + target.split("://", 1)[1].partition("/")[2]
        self.target = target
        self.path, _, self.query = target.partition("?")
        self.headers = handler.headers
        self.body = BodyStream(handler.rfile, handler.headers)
        self.payload_mode = self.header("x-amz-content-sha256") or UNSIGNED_PAYLOAD

    def header(self, name, default=None):
        values = self.headers.get_all(name)
        return ",".join(values) if values else default

    @property
    def hostname(self):
        host = (self.header("host") or "").lower()
        return host.rsplit(":", 1)[0] if not host.endswith("]") else host

    def service(self):
        host = self.hostname
        if host.startswith("sts.") or host == "sts.amazonaws.com":
            return "sts"
        if host.startswith("dynamodb.") or (self.header("x-amz-target") or "").startswith("DynamoDB_"):
            return "dynamodb"
        content_type = self.header("content-type") or ""
        if self.method == "POST" and content_type.startswith("application/x-www-form-urlencoded"):
            return "sts"
        return "s3"


class Store:
    def __init__(self):
        self.lock = threading.Lock()
        self.objects = {}  # (bucket, key) -> dict(size, etag, sha256, data, content_type, mtime)
        self.uploads = {}  # upload id -> dict(bucket, key, parts: {n: (etag, size, md5 digest)})
        self.tables = {}  # table -> [item]


def _xml(root, children, ns=S3_NS):
    body = "".join(f"<{k}>{escape(str(v))}</{k}>" for k, v in children)
    attr = f' xmlns="{ns}"' if ns else ""
    return f'<?xml version="1.0" encoding="UTF-8"?>\n<{root}{attr}>{body}</{root}>'.encode()


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    timeout = 300  # an idle keep-alive connection is closed after this
    server_version = "AmazonS3"
    sys_version = ""

    def log_message(self, format, *args):  # quiet: the JSON log says what happened
        pass

    def do_GET(self):
        self._handle()

    do_PUT = do_POST = do_HEAD = do_DELETE = do_PATCH = do_OPTIONS = do_GET

    # --- plumbing

    def _handle(self):
        self.request_id = uuid.uuid4().hex[:16].upper()
        req = Request(self)
        self.req = req
        self.log_entry = {
            "method": req.method,
            "host": req.header("host"),
            "target": req.target[:300],
            "payload": req.header("x-amz-content-sha256"),
        }
        service = None
        try:
            if req.path == "/echo-auth":
                service = "echo"
                return self._echo_auth(req)
            service = req.service()
            self.log_entry["service"] = service
            auth = parse_auth(req)
            self.log_entry["key_id"] = auth.key_id
            self.log_entry["signed_headers"] = ";".join(auth.signed_headers)
            for name in ("content-encoding", "transfer-encoding", "x-amz-trailer", "x-amz-security-token"):
                if req.header(name):
                    self.log_entry[name] = req.header(name)
            if service == "s3":
                payload_hash = req.payload_mode if auth.kind == "header" else UNSIGNED_PAYLOAD
                if auth.kind == "header" and req.header("x-amz-content-sha256") is None:
                    message = "Missing required header for this request: x-amz-content-sha256"
                    raise AwsError(400, "InvalidRequest", message)
                if auth.kind == "header" and not (
                    req.payload_mode in STREAMING_MODES
                    or req.payload_mode == UNSIGNED_PAYLOAD
                    or HEX_SHA256.match(req.payload_mode)
                ):
                    raise AwsError(400, "InvalidArgument", f"x-amz-content-sha256 {req.payload_mode!r}")
                verify(req, auth, self.server.config, "s3", payload_hash)
                self._s3(req, auth)
            else:
                body = req.body.read_all()
                payload_hash = req.header("x-amz-content-sha256") or hashlib.sha256(body).hexdigest()
                verify(req, auth, self.server.config, service, payload_hash)
                if service == "sts":
                    self._sts(req, auth, body)
                else:
                    self._dynamodb(req, auth, body)
        except AwsError as error:
            self._refuse(error, service)
        except (ConnectionError, ssl.SSLError, TimeoutError) as error:
            self.close_connection = True
            self._log(0, code="ConnectionLost", detail=str(error))
        except Exception as error:  # a bug here: say so rather than drop the connection
            self.close_connection = True
            message = f"{type(error).__name__}: {error}"
            self._refuse(AwsError(500, "InternalError", message, fatal=True), service)
            raise

    def _refuse(self, error, service):
        if error.fatal:
            self.close_connection = True
        else:
            try:
                self.req.body.drain()
            except AwsError:
                self.close_connection = True
        detail = {"message": error.message}
        if "CanonicalRequest" in error.extra:
            detail["canonical_request"] = error.extra["CanonicalRequest"]
        self._log(error.status, code=error.code, detail=detail)
        if service == "dynamodb":
            error_type = f"com.amazonaws.dynamodb.v20120810#{error.code}"
            body = json.dumps({"__type": error_type, "message": error.message})
            self._send(error.status, body.encode(), "application/x-amz-json-1.0")
        elif service == "sts":
            body = (
                '<ErrorResponse xmlns="https://sts.amazonaws.com/doc/2011-06-15/"><Error><Type>Sender</Type>'
                f"<Code>{escape(error.code)}</Code><Message>{escape(error.message)}</Message></Error>"
                f"<RequestId>{self.request_id}</RequestId></ErrorResponse>"
            )
            self._send(error.status, body.encode(), "text/xml")
        else:
            children = [("Code", error.code), ("Message", error.message), *error.extra.items()]
            children.append(("RequestId", self.request_id))
            self._send(error.status, _xml("Error", children, ns=None), "application/xml")

    def _send(self, status, body=b"", content_type=None, headers=(), length=None):
        self.send_response(status)
        self.send_header("x-amz-request-id", self.request_id)
        self.send_header("x-amz-id-2", base64.b64encode(self.request_id.encode()).decode())
        if content_type:
            self.send_header("Content-Type", content_type)
        for name, value in headers:
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body) if length is None else length))
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        if self.command != "HEAD" and body:
            self.wfile.write(body)
        self.wfile.flush()

    def _ok(self, body=b"", content_type=None, headers=(), length=None, detail=None, status=200):
        self.req.body.drain()  # a body nobody asked for must not poison the keep-alive connection
        self._log(status, detail=detail)
        self._send(status, body, content_type, headers, length)

    def _log(self, status, code=None, detail=None):
        now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        entry = {"time": now, **self.log_entry, "status": status}
        if code:
            entry["code"] = code
        if detail:
            entry["detail"] = detail
        self.server.write_log(entry)

    # --- /echo-auth

    def _echo_auth(self, req):
        body = req.body.read_all(64 * 1024 * 1024)
        result = {
            "authorization": req.header("authorization"),
            "x-amz-security-token": req.header("x-amz-security-token"),
            "access_key_id": None,
            "verified": False,
        }
        try:
            auth = parse_auth(req)
            result["access_key_id"] = auth.key_id
            if auth.kind == "query":
                result["x-amz-security-token"] = dict(parse_qsl(req.query)).get("X-Amz-Security-Token")
            if req.payload_mode in STREAMING_MODES:
                raise AwsError(400, "InvalidRequest", "streaming payloads are not echoed")
            if HEX_SHA256.match(req.payload_mode) and hashlib.sha256(body).hexdigest() != req.payload_mode:
                raise AwsError(400, "XAmzContentSHA256Mismatch", "body does not match x-amz-content-sha256")
            if req.header("x-amz-content-sha256"):
                payload_hash = req.header("x-amz-content-sha256")
            elif auth.kind == "query" and auth.service == "s3":
                payload_hash = UNSIGNED_PAYLOAD
            else:
                payload_hash = hashlib.sha256(body).hexdigest()
            verify(req, auth, self.server.config, None, payload_hash)
            result["verified"] = True
        except AwsError as error:
            result["error"] = error.code
        self.log_entry["key_id"] = result["access_key_id"]
        self._ok(json.dumps(result).encode(), "application/json", detail={"verified": result["verified"]})

    # --- STS

    def _sts(self, req, auth, body):
        params = dict(parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True))
        params.update(parse_qsl(req.query, keep_blank_values=True))
        action = params.get("Action")
        if action != "GetCallerIdentity":
            raise AwsError(400, "InvalidAction", f"Could not find operation {action} for version 2011-06-15")
        response = (
            '<GetCallerIdentityResponse xmlns="https://sts.amazonaws.com/doc/2011-06-15/">'
            "<GetCallerIdentityResult>"
            f"<Arn>arn:aws:iam::{ACCOUNT_ID}:user/keyswap-oracle/{escape(auth.key_id)}</Arn>"
            f"<UserId>{escape(auth.key_id)}</UserId><Account>{ACCOUNT_ID}</Account>"
            "</GetCallerIdentityResult>"
            f"<ResponseMetadata><RequestId>{self.request_id}</RequestId></ResponseMetadata>"
            "</GetCallerIdentityResponse>"
        )
        self._ok(response.encode(), "text/xml")

    # --- DynamoDB

    def _dynamodb(self, req, auth, body):
        target = req.header("x-amz-target") or ""
        operation = target.rpartition(".")[2]
        try:
            params = json.loads(body or b"{}")
        except ValueError:
            raise AwsError(400, "SerializationException", "body is not JSON")
        store = self.server.store
        table = params.get("TableName")
        if operation == "PutItem":
            item = params.get("Item") or {}
            with store.lock:
                items = store.tables.setdefault(table, [])
                items[:] = [i for i in items if not self._same_item(i, item)]
                items.append(item)
            answer = {}
        elif operation == "GetItem":
            key = params.get("Key") or {}
            with store.lock:
                found = [i for i in store.tables.get(table, []) if all(i.get(k) == v for k, v in key.items())]
            answer = {"Item": found[0]} if found else {}
        else:
            raise AwsError(400, "UnknownOperationException", f"unsupported operation {target!r}")
        data = json.dumps(answer).encode()
        self._ok(data, "application/x-amz-json-1.0", headers=[("x-amz-crc32", str(zlib.crc32(data)))])

    @staticmethod
    def _same_item(a, b):
        """Items are matched on their first attribute (the tests' partition key)."""
        first = next(iter(b), None)
        return first is not None and a.get(first) == b.get(first)

    # --- S3

    def _s3(self, req, auth):
        bucket, key = s3_location(req)
        params = dict(parse_qsl(req.query, keep_blank_values=True))
        method = req.method
        if not bucket:
            raise AwsError(400, "InvalidRequest", "no bucket in the request")
        if not key:
            if method == "PUT":
                consume_body(req, auth, [])
                return self._ok(headers=[("Location", f"/{bucket}")])
            if method == "HEAD":
                return self._ok()
            raise AwsError(501, "NotImplemented", f"bucket operation {method} not supported")
        if method == "PUT" and "uploadId" in params:
            return self._upload_part(req, auth, params)
        if method == "PUT":
            return self._put_object(req, auth, bucket, key)
        if method == "POST" and "uploads" in params:
            return self._create_multipart(req, auth, bucket, key)
        if method == "POST" and "uploadId" in params:
            return self._complete_multipart(req, auth, bucket, key, params["uploadId"])
        if method == "DELETE" and "uploadId" in params:
            with self.server.store.lock:
                self.server.store.uploads.pop(params["uploadId"], None)
            return self._ok(status=204)
        if method == "DELETE":
            with self.server.store.lock:
                self.server.store.objects.pop((bucket, key), None)
            return self._ok(status=204)
        if method in ("GET", "HEAD"):
            return self._get_object(req, bucket, key)
        raise AwsError(501, "NotImplemented", f"{method} on an object is not supported")

    @staticmethod
    def _header_checksums(req):
        return [name for name in CHECKSUMS if req.header(f"x-amz-checksum-{name}")]

    def _put_object(self, req, auth, bucket, key):
        summary = consume_body(req, auth, self._header_checksums(req))
        etag = f'"{summary.md5.hexdigest()}"'
        obj = {
            "size": summary.length,
            "etag": etag,
            "sha256": summary.sha256.hexdigest(),
            "data": bytes(summary.data) if summary.data is not None else None,
            "content_type": req.header("content-type") or "binary/octet-stream",
            "mtime": time.time(),
        }
        with self.server.store.lock:
            self.server.store.objects[(bucket, key)] = obj
        headers = [("ETag", etag)]
        headers += [(f"x-amz-checksum-{name}", summary.checksum_b64(name)) for name in summary.checksums]
        self._ok(headers=headers, detail={"bytes": summary.length, "sha256": obj["sha256"]})

    def _get_object(self, req, bucket, key):
        with self.server.store.lock:
            obj = self.server.store.objects.get((bucket, key))
        if obj is None:
            raise AwsError(404, "NoSuchKey", "The specified key does not exist.")
        headers = [
            ("ETag", obj["etag"]),
            ("Last-Modified", time.strftime("%a, %d %b %Y %H:%M:%S GMT", time.gmtime(obj["mtime"]))),
            ("Accept-Ranges", "bytes"),
        ]
        if req.method == "HEAD":
            return self._ok(content_type=obj["content_type"], headers=headers, length=obj["size"])
        if obj["data"] is None:
            raise AwsError(501, "NotImplemented", "this oracle does not keep bodies over 1 MiB")
        if (req.header("x-amz-checksum-mode") or "").upper() == "ENABLED":
            crc = _Crc32()
            crc.update(obj["data"])
            headers.append(("x-amz-checksum-crc32", base64.b64encode(crc.digest()).decode()))
        self._ok(obj["data"], obj["content_type"], headers=headers)

    def _create_multipart(self, req, auth, bucket, key):
        consume_body(req, auth, self._header_checksums(req))
        upload_id = uuid.uuid4().hex
        with self.server.store.lock:
            self.server.store.uploads[upload_id] = {"bucket": bucket, "key": key, "parts": {}}
        fields = [("Bucket", bucket), ("Key", key), ("UploadId", upload_id)]
        body = _xml("InitiateMultipartUploadResult", fields)
        self._ok(body, "application/xml")

    def _upload_part(self, req, auth, params):
        with self.server.store.lock:
            upload = self.server.store.uploads.get(params["uploadId"])
        if upload is None:
            raise AwsError(404, "NoSuchUpload", "The specified upload does not exist.")
        try:
            number = int(params.get("partNumber", ""))
        except ValueError:
            raise AwsError(400, "InvalidArgument", "partNumber must be an integer")
        summary = consume_body(req, auth, self._header_checksums(req))
        etag = f'"{summary.md5.hexdigest()}"'
        with self.server.store.lock:
            upload["parts"][number] = (etag, summary.length, summary.md5.digest())
        headers = [("ETag", etag)]
        headers += [(f"x-amz-checksum-{name}", summary.checksum_b64(name)) for name in summary.checksums]
        self._ok(headers=headers, detail={"part": number, "bytes": summary.length})

    def _complete_multipart(self, req, auth, bucket, key, upload_id):
        summary = consume_body(req, auth, self._header_checksums(req))
        with self.server.store.lock:
            upload = self.server.store.uploads.get(upload_id)
        if upload is None:
            raise AwsError(404, "NoSuchUpload", "The specified upload does not exist.")
        try:
            root = ElementTree.fromstring(bytes(summary.data or b""))
        except ElementTree.ParseError:
            raise AwsError(400, "MalformedXML", "The XML you provided was not well-formed.")
        listed = []
        for part in root.iter():
            if part.tag.rpartition("}")[2] != "Part":
                continue
            fields = {child.tag.rpartition("}")[2]: (child.text or "") for child in part}
            listed.append((int(fields.get("PartNumber", "0")), fields.get("ETag", "")))
        if not listed or [n for n, _ in listed] != sorted({n for n, _ in listed}):
            raise AwsError(400, "InvalidPartOrder", "The list of parts was not in ascending order.")
        md5s, size = b"", 0
        for number, etag in listed:
            stored = upload["parts"].get(number)
            if stored is None or stored[0].strip('"') != etag.strip('"'):
                raise AwsError(400, "InvalidPart", f"part {number} was not uploaded with that ETag")
            md5s += stored[2]
            size += stored[1]
        etag = f'"{hashlib.md5(md5s).hexdigest()}-{len(listed)}"'
        with self.server.store.lock:
            self.server.store.uploads.pop(upload_id, None)
            self.server.store.objects[(bucket, key)] = {
                "size": size,
                "etag": etag,
                "sha256": None,
                "data": None,
                "content_type": "binary/octet-stream",
                "mtime": time.time(),
            }
        location = f"https://{req.header('host')}/{bucket}/{key}"
        fields = [("Location", location), ("Bucket", bucket), ("Key", key), ("ETag", etag)]
        body = _xml("CompleteMultipartUploadResult", fields)
        self._ok(body, "application/xml", detail={"parts": len(listed), "bytes": size})


class Config:
    def __init__(self, access_key_id, secret, session_token):
        self.access_key_id = access_key_id
        self.secret = secret
        self.session_token = session_token


class TlsThreadingServer(socketserver.ThreadingMixIn, HTTPServer):
    """Threaded HTTPS server; the TLS handshake happens in the connection's own thread."""

    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128

    def __init__(self, address, context, config, log_path):
        super().__init__(address, Handler)
        self.context = context
        self.config = config
        self.store = Store()
        self._log_path = log_path
        self._log_lock = threading.Lock()

    def finish_request(self, request, client_address):
        try:
            tls = self.context.wrap_socket(request, server_side=True)
        except (ssl.SSLError, OSError):
            return
        try:
            self.RequestHandlerClass(tls, client_address, self)
        except (ConnectionError, ssl.SSLError, TimeoutError):
            pass
        finally:
            try:
                tls.close()
            except OSError:
                pass

    def write_log(self, entry):
        line = json.dumps(entry)
        with self._log_lock:
            print(line, file=sys.stderr, flush=True)
            if self._log_path:
                with open(self._log_path, "a") as log:
                    log.write(line + "\n")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cert", required=True)
    parser.add_argument("--key", required=True)
    parser.add_argument("--port-file", required=True)
    parser.add_argument("--access-key-id", required=True)
    parser.add_argument("--secret", required=True)
    parser.add_argument("--session-token")
    parser.add_argument("--log")
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args()

    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(args.cert, args.key)
    context.set_alpn_protocols(["http/1.1"])
    config = Config(args.access_key_id, args.secret, args.session_token)
    server = TlsThreadingServer(("127.0.0.1", args.port), context, config, args.log)
    port = server.server_address[1]
    temporary = f"{args.port_file}.tmp{os.getpid()}"
    with open(temporary, "w") as f:
        f.write(f"{port}\n")
    os.replace(temporary, args.port_file)
    print(f"aws_upstream listening on 127.0.0.1:{port}", file=sys.stderr, flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
