"""Checks a SigV4 signature the way AWS would, with botocore's own signer (not keyswap's code):
reads one request as an upstream received it (JSON on stdin: method, path, host, headers, body
as base64, and the real key), rebuilds the canonical request from the headers it signed, and
prints `ok <key id>` when the signature (header or presigned query) is the real key's, or
`mismatch …`.
"""

import base64
import json
import sys
import urllib.parse

from botocore.auth import S3SigV4Auth, SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials


def main():
    r = json.load(sys.stdin)
    headers = {k.lower(): v for k, v in r["headers"]}
    path, _, query = r["path"].partition("?")
    params = urllib.parse.parse_qs(query, keep_blank_values=True)
    if "authorization" in headers:
        fields = dict(
            f.strip().split("=", 1) for f in headers["authorization"].split(" ", 1)[1].split(",")
        )
        credential, signed, signature = fields["Credential"], fields["SignedHeaders"], fields["Signature"]
        amz_date = headers["x-amz-date"]
        url_query = query
    else:
        credential = params["X-Amz-Credential"][0]
        signed = params["X-Amz-SignedHeaders"][0]
        signature = params["X-Amz-Signature"][0]
        amz_date = params["X-Amz-Date"][0]
        url_query = "&".join(p for p in query.split("&") if not p.startswith("X-Amz-Signature="))
    key_id, date, region, service, _ = credential.split("/")
    if key_id != r["key_id"]:
        print("mismatch: credential", key_id)
        return
    to_sign = {}
    for name in signed.split(";"):
        to_sign[name] = r["host"] if name == "host" else headers.get(name, "")
    body = base64.b64decode(r["body"])
    url = "https://" + r["host"] + path + ("?" + url_query if url_query else "")
    request = AWSRequest(method=r["method"], url=url, data=body, headers=to_sign)
    request.context["timestamp"] = amz_date
    cls = S3SigV4Auth if service == "s3" else SigV4Auth
    auth = cls(Credentials(key_id, r["secret"], r.get("token")), service, region)
    if "authorization" not in headers:
        auth.payload = lambda _request: "UNSIGNED-PAYLOAD" if service == "s3" else auth.__class__.payload(auth, _request)
    canonical = auth.canonical_request(request)
    expected = auth.signature(auth.string_to_sign(request, canonical), request)
    if expected == signature:
        print("ok", key_id)
    else:
        print("mismatch: expected", expected, "got", signature, "\n" + canonical)


if __name__ == "__main__":
    main()
