#!/usr/bin/env python3
"""S3 behaviour checks against a running server; run by smoke.sh.

Reads the endpoint, credentials and bucket from the variables `s3.sh env` prints.
Prints one line per check and closes with 'N passed, N failed'; exit 1 on any failure.
Conditional-write checks are required unless S3_SMOKE_REQUIRE_CONDITIONAL=0, in which
case they are only reported.
"""
import hashlib
import os
import sys
import time
import uuid

sys.dont_write_bytecode = True  # keep the work tree clean
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from s3client import Client, S3Error  # noqa: E402

c = Client()
bucket = os.environ.get("AWS_BUCKET") or os.environ.get("S3_BUCKET") or "headwater"
require_cond = os.environ.get("S3_SMOKE_REQUIRE_CONDITIONAL", "1") != "0"
prefix = f"smoke/{uuid.uuid4().hex[:12]}/"
passed = failed = 0
notes = []


def check(name, fn, required=True):
    global passed, failed
    t0 = time.monotonic()
    try:
        detail = fn() or ""
    except Exception as e:  # noqa: BLE001 - report every failure the same way
        if required:
            failed += 1
            print(f"FAIL {name}: {e}")
        else:
            print(f"info {name}: not supported ({e})")
            notes.append(f"{name}: NOT supported")
        return
    passed += 1
    print(f"ok   {name} ({(time.monotonic() - t0) * 1000:.0f} ms){' - ' + detail if detail else ''}")


def expect(cond, msg):
    if not cond:
        raise AssertionError(msg)


def t_bucket():
    expect(bucket in c.list_buckets(), f"bucket {bucket!r} missing from ListBuckets")


payload = os.urandom(1024) + "héllo, wörld\n".encode()
key = prefix + "dir with space/obj+1.bin"  # exercises URI encoding in signatures


def t_put_get():
    etag = c.put(bucket, key, payload, headers={"content-type": "application/octet-stream"})
    got = c.get(bucket, key)
    expect(got == payload, f"GET returned {len(got)} bytes that differ from the {len(payload)} PUT")
    expect(etag.strip('"') == hashlib.md5(payload).hexdigest(), f"ETag {etag} is not the MD5 of the body")
    return f"{len(payload)} bytes round-tripped, etag {etag}"


def t_range():
    got = c.get(bucket, key, headers={"range": "bytes=10-19"})
    expect(got == payload[10:20], "range GET returned wrong bytes")


def t_head_missing():
    st, _, _ = c.request("HEAD", bucket, prefix + "does-not-exist")
    expect(st == 404, f"HEAD of a missing key answered {st}, want 404")


def t_list():
    for i in range(3):
        c.put(bucket, f"{prefix}list/{i}", str(i).encode())
    keys = [k for k, _ in c.list(bucket, prefix + "list/")]
    expect(keys == [f"{prefix}list/{i}" for i in range(3)], f"listed {keys}")
    return f"{len(keys)} keys"


def t_delete():
    c.delete(bucket, key)
    st, _, _ = c.request("GET", bucket, key)
    expect(st == 404, f"GET after DELETE answered {st}, want 404")
    for i in range(3):
        c.delete(bucket, f"{prefix}list/{i}")
    expect(c.list(bucket, prefix + "list/") == [], "keys left after delete")


def t_multipart():
    part1 = os.urandom(5 * 1024 * 1024)  # every part but the last must be >= 5 MiB
    part2 = os.urandom(123_457)
    mkey = prefix + "multipart.bin"
    etag = c.multipart_upload(bucket, mkey, [part1, part2])
    got = c.get(bucket, mkey)
    expect(got == part1 + part2, "multipart object differs from its parts")
    expect(etag.strip('"').endswith("-2"), f"multipart ETag {etag} lacks the -2 part count")
    c.delete(bucket, mkey)
    return f"2 parts, {len(got)} bytes, etag {etag}"


ckey = prefix + "manifest.json"
state = {}


def t_if_none_match():
    # Create-if-absent, as for an atomic manifest/commit-marker write.
    st, h, body = c.request("PUT", bucket, ckey, body=b"v1", headers={"if-none-match": "*"})
    expect(st == 200, f"first conditional PUT answered {st}: {body[:200]!r}")
    state["etag"] = h.get("etag", "")
    st, _, body = c.request("PUT", bucket, ckey, body=b"v2", headers={"if-none-match": "*"})
    expect(st in (412, 409), f"second PUT with If-None-Match: * answered {st} (want 412): overwrote the object")
    expect(c.get(bucket, ckey) == b"v1", "object changed despite the failed precondition")
    return f"create ok, overwrite refused with {st}"


def t_if_match():
    # Compare-and-swap on the ETag, as object_store's ConditionalPut::ETagMatch does.
    st, _, _ = c.request("PUT", bucket, ckey, body=b"v3", headers={"if-match": '"0123456789abcdef0123456789abcdef"'})
    expect(st == 412, f"PUT with a stale If-Match answered {st} (want 412)")
    st, _, body = c.request("PUT", bucket, ckey, body=b"v3", headers={"if-match": state["etag"]})
    expect(st == 200, f"PUT with the current If-Match answered {st}: {body[:200]!r}")
    expect(c.get(bucket, ckey) == b"v3", "If-Match PUT did not replace the object")
    return "stale etag refused with 412, current etag accepted"


def t_cleanup():
    c.delete(bucket, ckey)
    left = c.list(bucket, prefix)
    expect(left == [], f"objects left under {prefix}: {left}")


def t_bad_signature():
    bad = Client(access_key=c.access_key, secret_key=c.secret_key + "x")
    st, _, _ = bad.request("GET")
    expect(st == 403, f"wrong secret answered {st}, want 403")


print(f"S3 smoke test against {c.scheme}://{c.netloc}, bucket {bucket}, prefix {prefix}")
check("bucket exists (ListBuckets)", t_bucket)
check("PUT + GET round trip", t_put_get)
check("ranged GET", t_range)
check("HEAD missing key -> 404", t_head_missing)
check("LIST (ListObjectsV2 with prefix)", t_list)
check("DELETE", t_delete)
check("multipart upload", t_multipart)
check("conditional PUT If-None-Match: *", t_if_none_match, required=require_cond)
if "etag" in state:
    check("conditional PUT If-Match: <etag>", t_if_match, required=require_cond)
check("cleanup", t_cleanup)
check("wrong secret rejected", t_bad_signature)
for n in notes:
    print(f"note: {n}")
print(f"{passed} passed, {failed} failed")
sys.exit(1 if failed else 0)
