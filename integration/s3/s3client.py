#!/usr/bin/env python3
"""Tiny S3 client: AWS Signature V4 over http.client, Python standard library only.

Used by s3.sh (readiness probe, bucket creation) and smoke.py. Path-style
addressing, one request per call, no retries: it is a test tool, not an SDK.

Configuration comes from the same environment variables that `s3.sh env`
prints (and that object_store's AmazonS3Builder::from_env() reads):
AWS_ENDPOINT_URL (or AWS_ENDPOINT), AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY,
AWS_REGION. Command-line flags override them.

CLI (exit status 0 on success):
  s3client.py ready                     signed ListBuckets answers 200
  s3client.py mb BUCKET                 create bucket (already owned = ok)
  s3client.py ls [BUCKET [PREFIX]]      list buckets, or keys under PREFIX
  s3client.py put BUCKET KEY FILE|-     upload a file (or stdin)
  s3client.py get BUCKET KEY            download to stdout
  s3client.py rm BUCKET KEY             delete one object
"""
import argparse
import datetime
import hashlib
import hmac
import http.client
import os
import sys
import urllib.parse
import xml.etree.ElementTree as ET

S3_NS = "{http://s3.amazonaws.com/doc/2006-03-01/}"
EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()


def _quote(s, safe="-_.~"):
    return urllib.parse.quote(s, safe=safe)


class S3Error(Exception):
    def __init__(self, status, body, what=""):
        self.status = status
        self.body = body
        code = ""
        try:
            code = ET.fromstring(body).findtext("Code") or ""
        except ET.ParseError:
            pass
        self.code = code
        super().__init__(f"{what}: HTTP {status} {code} {body[:300]!r}")


class Client:
    def __init__(self, endpoint=None, access_key=None, secret_key=None, region=None, timeout=30):
        endpoint = endpoint or os.environ.get("AWS_ENDPOINT_URL") or os.environ.get("AWS_ENDPOINT")
        if not endpoint:
            raise SystemExit("s3client: no endpoint (set AWS_ENDPOINT_URL, e.g. eval \"$(integration/s3/s3.sh env)\")")
        u = urllib.parse.urlsplit(endpoint)
        if u.scheme not in ("http", "https") or not u.hostname:
            raise SystemExit(f"s3client: bad endpoint {endpoint!r}")
        self.scheme = u.scheme
        self.netloc = u.netloc
        self.base_path = u.path.rstrip("/")
        self.access_key = access_key or os.environ.get("AWS_ACCESS_KEY_ID", "")
        self.secret_key = secret_key or os.environ.get("AWS_SECRET_ACCESS_KEY", "")
        self.region = region or os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or "us-east-1"
        self.timeout = timeout

    # -- signing ---------------------------------------------------------
    def _sign(self, method, path, query, headers, payload_hash):
        now = datetime.datetime.now(datetime.timezone.utc)
        amz_date = now.strftime("%Y%m%dT%H%M%SZ")
        day = now.strftime("%Y%m%d")
        h = {k.lower(): str(v) for k, v in headers.items()}
        h["host"] = self.netloc
        h["x-amz-date"] = amz_date
        h["x-amz-content-sha256"] = payload_hash
        canonical_query = "&".join(
            f"{_quote(k)}={_quote(v)}" for k, v in sorted(query.items())
        )
        names = sorted(h)
        canonical_headers = "".join(f"{n}:{' '.join(h[n].split())}\n" for n in names)
        signed_headers = ";".join(names)
        canonical_request = "\n".join(
            [method, _quote(path, safe="/-_.~"), canonical_query, canonical_headers, signed_headers, payload_hash]
        )
        scope = f"{day}/{self.region}/s3/aws4_request"
        to_sign = "\n".join(
            ["AWS4-HMAC-SHA256", amz_date, scope, hashlib.sha256(canonical_request.encode()).hexdigest()]
        )
        key = ("AWS4" + self.secret_key).encode()
        for part in (day, self.region, "s3", "aws4_request"):
            key = hmac.new(key, part.encode(), hashlib.sha256).digest()
        sig = hmac.new(key, to_sign.encode(), hashlib.sha256).hexdigest()
        h["authorization"] = (
            f"AWS4-HMAC-SHA256 Credential={self.access_key}/{scope}, "
            f"SignedHeaders={signed_headers}, Signature={sig}"
        )
        return h, canonical_query

    def request(self, method, bucket="", key="", query=None, body=b"", headers=None):
        """Send one signed request; returns (status, headers dict (lower-case), body bytes)."""
        query = query or {}
        path = self.base_path + "/"
        if bucket:
            path += bucket
            if key:
                path += "/" + key
        payload_hash = hashlib.sha256(body).hexdigest() if body else EMPTY_SHA256
        h, qs = self._sign(method, path, query, headers or {}, payload_hash)
        url = _quote(path, safe="/-_.~") + ("?" + qs if qs else "")
        conn_cls = http.client.HTTPSConnection if self.scheme == "https" else http.client.HTTPConnection
        conn = conn_cls(self.netloc, timeout=self.timeout)
        try:
            conn.request(method, url, body=body if body or method in ("PUT", "POST") else None, headers=h)
            resp = conn.getresponse()
            data = resp.read()
            return resp.status, {k.lower(): v for k, v in resp.getheaders()}, data
        finally:
            conn.close()

    def _ok(self, what, status, body, ok=(200,)):
        if status not in ok:
            raise S3Error(status, body, what)

    # -- operations ------------------------------------------------------
    def list_buckets(self):
        st, _, body = self.request("GET")
        self._ok("ListBuckets", st, body)
        return [e.text for e in ET.fromstring(body).iter(S3_NS + "Name")]

    def make_bucket(self, bucket):
        st, _, body = self.request("PUT", bucket)
        if st == 200:
            return True
        err = S3Error(st, body, f"CreateBucket {bucket}")
        if err.code == "BucketAlreadyOwnedByYou":
            return False
        raise err

    def put(self, bucket, key, data, headers=None):
        st, h, body = self.request("PUT", bucket, key, body=data, headers=headers)
        self._ok(f"PutObject {bucket}/{key}", st, body)
        return h.get("etag", "")

    def get(self, bucket, key, headers=None):
        st, h, body = self.request("GET", bucket, key, headers=headers)
        self._ok(f"GetObject {bucket}/{key}", st, body, ok=(200, 206))
        return body

    def delete(self, bucket, key):
        st, _, body = self.request("DELETE", bucket, key)
        self._ok(f"DeleteObject {bucket}/{key}", st, body, ok=(204, 200))

    def list(self, bucket, prefix=""):
        keys, token = [], None
        while True:
            q = {"list-type": "2", "prefix": prefix}
            if token:
                q["continuation-token"] = token
            st, _, body = self.request("GET", bucket, query=q)
            self._ok(f"ListObjectsV2 {bucket}", st, body)
            root = ET.fromstring(body)
            for c in root.iter(S3_NS + "Contents"):
                keys.append((c.findtext(S3_NS + "Key"), int(c.findtext(S3_NS + "Size") or 0)))
            if root.findtext(S3_NS + "IsTruncated") != "true":
                return keys
            token = root.findtext(S3_NS + "NextContinuationToken")

    def multipart_upload(self, bucket, key, parts):
        st, _, body = self.request("POST", bucket, key, query={"uploads": ""})
        self._ok("CreateMultipartUpload", st, body)
        upload_id = ET.fromstring(body).findtext(S3_NS + "UploadId")
        try:
            etags = []
            for n, part in enumerate(parts, 1):
                st, h, body = self.request(
                    "PUT", bucket, key, query={"partNumber": str(n), "uploadId": upload_id}, body=part
                )
                self._ok(f"UploadPart {n}", st, body)
                etags.append(h["etag"])
            xml = "<CompleteMultipartUpload>" + "".join(
                f"<Part><PartNumber>{n}</PartNumber><ETag>{e}</ETag></Part>" for n, e in enumerate(etags, 1)
            ) + "</CompleteMultipartUpload>"
            st, _, body = self.request("POST", bucket, key, query={"uploadId": upload_id}, body=xml.encode())
            # S3 may answer 200 with an <Error> body for CompleteMultipartUpload.
            if st != 200 or b"<Error>" in body:
                raise S3Error(st, body, "CompleteMultipartUpload")
            return ET.fromstring(body).findtext(S3_NS + "ETag")
        except Exception:
            self.request("DELETE", bucket, key, query={"uploadId": upload_id})
            raise


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--endpoint")
    p.add_argument("--access-key")
    p.add_argument("--secret-key")
    p.add_argument("--region")
    p.add_argument("--timeout", type=float, default=30)
    p.add_argument("cmd", choices=["ready", "mb", "ls", "put", "get", "rm"])
    p.add_argument("args", nargs="*")
    a = p.parse_args(argv)
    c = Client(a.endpoint, a.access_key, a.secret_key, a.region, timeout=a.timeout)
    try:
        if a.cmd == "ready":
            c.list_buckets()
        elif a.cmd == "mb":
            created = c.make_bucket(a.args[0])
            print(("created" if created else "exists") + f" bucket {a.args[0]}")
        elif a.cmd == "ls":
            if not a.args:
                print("\n".join(c.list_buckets()))
            else:
                for k, size in c.list(a.args[0], a.args[1] if len(a.args) > 1 else ""):
                    print(f"{size:>12}  {k}")
        elif a.cmd == "put":
            src = a.args[2]
            data = sys.stdin.buffer.read() if src == "-" else open(src, "rb").read()
            print(c.put(a.args[0], a.args[1], data))
        elif a.cmd == "get":
            sys.stdout.buffer.write(c.get(a.args[0], a.args[1]))
        elif a.cmd == "rm":
            c.delete(a.args[0], a.args[1])
    except IndexError:
        p.error(f"missing arguments for {a.cmd}")
    except (S3Error, OSError) as e:
        print(f"s3client {a.cmd}: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
