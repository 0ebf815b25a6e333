#!/usr/bin/env python3
"""Generate Gate-Signature test vectors, judged by 0Gate's official Python SDK.

Deterministic: fixed secrets, timestamps and bodies; the SDK's clock is
monkeypatched per case. Writes tests/vectors/signatures.json next to this file.

    pip install 0bit-gate==0.1.4
    python3 tests/vectors/generate.py

Each case records:
  sdk_accepts        what WebhooksResource.construct_event (the SDK verifier) did
                     with exactly these inputs (secrets[0] if one secret, else the list)
  sdk_error          "<ExceptionClass>: <message>" or null
  sdk_signature_ok   true when the SDK got past the signature check (it accepted, or it
                     rejected only because the body is not JSON); for several secrets:
                     any of the per-secret SDK calls did
  sdk_per_secret     the SDK's verdict for each configured secret on its own
  relay_must_accept  what gate-relay's *signature verifier* must return (true = accept,
                     false = reject). It does not include JSON parsing of the body.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import importlib.metadata
import json
import os
import re
import sys
from unittest import mock

from zerobit.gate import webhooks as sdk_webhooks
from zerobit.gate.webhooks import WebhooksResource

EXPECTED_SDK_VERSION = "0.1.4"
SDK_VERSION = importlib.metadata.version("0bit-gate")

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "signatures.json")

# ---- fixed inputs (fake secrets, for tests only) ---------------------------------

NOW = 1782475200
TOL = 300
SECRET = "whsec_test_5f1c0a9e3b7d4c2a8e6f0b1d9c3a7e5f"
SECRET_LIVE = "whsec_live_0a1b2c3d4e5f60718293a4b5c6d7e8f9"
SECRET_OLD = "whsec_test_old_9e8d7c6b5a4f3e2d1c0b"
WRONG = "whsec_test_ffffffffffffffffffffffffffffffff"
PLAIN = "plainsecret-without-prefix-0123"
B64_SECRET = "whsec_" + base64.b64encode(b"0123456789abcdef0123456789abcdef").decode()

EVENT = {
    "id": "evt_01J0GATEVECTORS000000001",
    "type": "gate_session.completed",
    "created_at": NOW,
    "data": {
        "id": "gs_01J0GATEVECTORS",
        "object": "gate_session",
        "mode": "live",
        "status": "completed",
        "amount": "100.00",
        "currency": "EUR",
        "metadata": {"order_id": "ord_1001"},
        "user_reference": "usr_7f3a",
        "tx_refid": "tx_9c2e",
    },
}
BODY = json.dumps(EVENT, separators=(",", ":")).encode("utf-8")
BODY_PRETTY = json.dumps(EVENT, indent=2).encode("utf-8")
assert b'"amount":"100.00"' in BODY
BODY_TAMPERED = BODY.replace(b'"amount":"100.00"', b'"amount":"100.01"')  # one byte
BODY_UNICODE = json.dumps(
    {"id": "evt_unicode", "type": "webhook.test", "created_at": NOW,
     "data": {"livemode": False, "note": "Zoë — 東京 €100 ✓ 🚀"}},
    ensure_ascii=False, separators=(",", ":")).encode("utf-8")
BODY_NON_UTF8 = b'{"id":"evt_latin1","type":"webhook.test","data":{"n":"Zo\xeb"}}'
BODY_PADDED = b"  \n" + BODY + b"\n\t "
BODY_NL = BODY + b"\n"


def _large_body() -> bytes:
    chunks, h, size = [], b"gate-relay-vectors", 0
    while size < 100 * 1024:
        h = hashlib.sha256(h).digest()
        chunks.append(h.hex())
        size += 64
    blob = "".join(chunks)
    return json.dumps({"id": "evt_large_100k", "type": "webhook.test", "created_at": NOW,
                       "data": {"livemode": False, "blob": blob}},
                      separators=(",", ":")).encode("utf-8")


BODY_LARGE = _large_body()
BODY_LARGE_TAMPERED = BODY_LARGE[:-3] + (b"x" if BODY_LARGE[-3:-2] != b"x" else b"y") + BODY_LARGE[-2:]


def sig(secret: str, t: str | int, body: bytes) -> str:
    """HMAC-SHA256 hex over b"<t>." + body, key = secret as UTF-8 (per the contract)."""
    return hmac.new(secret.encode("utf-8"), f"{t}.".encode("ascii") + body, hashlib.sha256).hexdigest()


def sig_raw_key(key: bytes, t: str | int, body: bytes) -> str:
    return hmac.new(key, f"{t}.".encode("ascii") + body, hashlib.sha256).hexdigest()


GOOD = sig(SECRET, NOW, BODY)
BAD1 = sig(WRONG, NOW, BODY)
BAD2 = sig(SECRET, NOW - 1, BODY)

# ---- cases ----------------------------------------------------------------------
# (name, secrets, header, body, now, tolerance, relay_must_accept, note)

CASES: list[tuple] = []


def case(name, header, *, secrets=(SECRET,), body=BODY, now=NOW, tol=TOL, relay, note=""):
    CASES.append((name, list(secrets), header, body, now, tol, relay, note))


T = NOW
case("valid_basic", f"t={T},v1={GOOD}", relay=True)
case("valid_reversed_order", f"v1={GOOD},t={T}", relay=True)
case("wrong_secret", f"t={T},v1={BAD1}", relay=False)
case("tampered_body_one_byte", f"t={T},v1={GOOD}", body=BODY_TAMPERED, relay=False)
case("body_trailing_newline_not_signed", f"t={T},v1={GOOD}", body=BODY + b"\n", relay=False,
     note="signed without the newline, delivered with it")
case("body_trailing_newline_signed", f"t={T},v1={sig(SECRET, T, BODY_NL)}", body=BODY_NL,
     relay=True)
case("body_reserialized_pretty", f"t={T},v1={GOOD}", body=BODY_PRETTY, relay=False,
     note="same JSON value, different bytes: raw bytes are what is signed")
# tolerance
case("stale_301", f"t={T - 301},v1={sig(SECRET, T - 301, BODY)}", relay=False)
case("boundary_past_300", f"t={T - 300},v1={sig(SECRET, T - 300, BODY)}", relay=True)
case("boundary_future_300", f"t={T + 300},v1={sig(SECRET, T + 300, BODY)}", relay=True)
case("future_301", f"t={T + 301},v1={sig(SECRET, T + 301, BODY)}", relay=False)
case("custom_tolerance_600_skew_500", f"t={T - 500},v1={sig(SECRET, T - 500, BODY)}", tol=600,
     relay=True)
case("tolerance_zero_exact", f"t={T},v1={GOOD}", tol=0, relay=True)
case("tolerance_zero_off_by_one", f"t={T - 1},v1={sig(SECRET, T - 1, BODY)}", tol=0, relay=False)
case("t_in_milliseconds", f"t={T * 1000},v1={sig(SECRET, T * 1000, BODY)}", relay=False)
case("stale_but_signature_valid_for_stale_t", f"t={T - 86400},v1={sig(SECRET, T - 86400, BODY)}",
     relay=False, note="replay of a day-old signed request")
# header shape
case("missing_t", f"v1={GOOD}", relay=False)
case("missing_v1_only_v0", f"t={T},v0={GOOD}", relay=False)
case("missing_v1", f"t={T}", relay=False)
case("empty_header", "", relay=False)
case("whitespace_only_header", "   ", relay=False)
case("only_commas", ",,,", relay=False)
case("t_empty", f"t=,v1={GOOD}", relay=False)
case("t_non_integer", f"t=abc,v1={GOOD}", relay=False)
case("t_float", f"t={T}.0,v1={sig(SECRET, f'{T}.0', BODY)}", relay=False)
case("t_hex", f"t={hex(T)},v1={sig(SECRET, hex(T), BODY)}", relay=False)
case("t_inner_space", f"t=1782 475200,v1={GOOD}", relay=False)
case("t_negative", f"t=-{T},v1={sig(SECRET, -T, BODY)}", relay=False)
case("t_zero", f"t=0,v1={sig(SECRET, 0, BODY)}", now=0, relay=False,
     note="now=0 so the tolerance check alone would pass; must fail as non-positive")
case("t_minus_zero", f"t=-0,v1={sig(SECRET, 0, BODY)}", now=0, relay=False)
case("t_huge_overflows_i64", f"t=99999999999999999999999,v1={GOOD}", relay=False,
     note="must be rejected without panicking / wrapping")
case("t_leading_zeros_signed_canonical", f"t=000{T},v1={GOOD}", relay=True,
     note="SDK signs str(int(t)), not the raw t text")
case("t_leading_zeros_signed_raw", f"t=000{T},v1={sig(SECRET, f'000{T}', BODY)}", relay=False)
case("t_plus_sign_signed_canonical", f"t=+{T},v1={GOOD}", relay=True, note="Python int() accepts '+'")
case("t_plus_sign_signed_raw", f"t=+{T},v1={sig(SECRET, f'+{T}', BODY)}", relay=False)
case("t_underscores_signed_canonical", f"t=1_782_475_200,v1={GOOD}", relay=True,
     note="Python int() accepts digit-group underscores")
case("t_double_underscore", f"t=1__782475200,v1={GOOD}", relay=False)
case("t_unicode_digits_non_ascii_header", "t=" + "".join(chr(0x660 + int(c)) for c in str(T)) + f",v1={GOOD}",
     relay=False,
     note="Arabic-Indic digits: SDK int() accepts them when handed a str; not a valid ASCII HTTP "
          "header value (a WSGI server would hand the SDK latin-1 mojibake, which int() rejects)")
case("duplicate_t_last_signed", f"t={T - 100},t={T},v1={GOOD}", relay=True, note="last t wins in the SDK")
case("duplicate_t_first_signed", f"t={T},t={T - 100},v1={GOOD}", relay=False,
     note="SDK keeps the last t; contract silent -> follow the SDK")
case("duplicate_t_stale_last", f"t={T},t={T - 301},v1={GOOD}", relay=False)
# several v1
case("multi_v1_good_last", f"t={T},v1={BAD1},v1={GOOD}", relay=True)
case("multi_v1_good_first", f"t={T},v1={GOOD},v1={BAD1}", relay=True,
     note="SDK checks only the last v1; relay: any v1 may match")
case("multi_v1_good_middle", f"t={T},v1={BAD1},v1={GOOD},v1={BAD2}", relay=True)
case("multi_v1_good_then_empty", f"t={T},v1={GOOD},v1=", relay=True,
     note="SDK sees the last v1 empty -> 'malformed'")
case("multi_v1_good_then_garbage", f"t={T},v1={GOOD},v1=not-hex", relay=True)
case("multi_v1_all_bad", f"t={T},v1={BAD1},v1={BAD2}", relay=False)
case("multi_v1_rotation_overlap", f"t={T},v1={sig(SECRET_OLD, T, BODY)},v1={sig(SECRET, T, BODY)}",
     secrets=(SECRET,), relay=True)
# hex / value shape
case("v1_uppercase_hex", f"t={T},v1={GOOD.upper()}", relay=True, note="SDK compares against lowercase hexdigest")
case("v1_mixed_case_hex", f"t={T},v1={GOOD[:32].upper() + GOOD[32:]}", relay=True)
case("v1_too_short_63", f"t={T},v1={GOOD[:63]}", relay=False)
case("v1_too_long_65", f"t={T},v1={GOOD}0", relay=False)
case("v1_non_hex", f"t={T},v1={'zz' * 32}", relay=False)
case("v1_empty", f"t={T},v1=", relay=False)
case("v1_trailing_equals", f"t={T},v1={GOOD}=", relay=False, note="split at the first '=' only")
case("v1_0x_prefix", f"t={T},v1=0x{GOOD}", relay=False)
case("v1_non_ascii", f"t={T},v1={GOOD[:63]}é", relay=False,
     note="SDK raises TypeError from hmac.compare_digest, not WebhookSignatureError")
case("v1_base64_instead_of_hex", f"t={T},v1={base64.b64encode(bytes.fromhex(GOOD)).decode()}", relay=False)
case("keys_upper_case", f"T={T},V1={GOOD}", relay=False, note="keys are case-sensitive")
# whitespace and tolerated shape
case("spaces_around_parts", f" t={T} , v1={GOOD} ", relay=True)
case("spaces_around_equals", f"t = {T}, v1 = {GOOD}", relay=True)
case("tabs_around_parts", f"\tt=\t{T}\t,\tv1=\t{GOOD}\t", relay=True)
case("nbsp_around_parts_non_ascii_header", f"\u00a0t={T}\u00a0,v1={GOOD}\u00a0", relay=False,
     note="SDK str.strip() removes U+00A0; not a valid ASCII HTTP header value")
case("unknown_v0_part", f"t={T},v0=deadbeef,v1={GOOD}", relay=True)
case("unknown_v0_holds_good_v1_bad", f"t={T},v0={GOOD},v1={BAD1}", relay=False, note="only v1 is a signature")
case("unknown_extra_keys", f"t={T},v1={GOOD},v2=abc,scheme=hmac", relay=True)
case("parts_without_equals", f"t={T},garbage,v1={GOOD},more", relay=True)
case("empty_key_part", f"t={T},={BAD1},v1={GOOD}", relay=True)
case("trailing_and_leading_commas", f",t={T},v1={GOOD},", relay=True)
# secrets
case("secret_without_whsec_prefix", f"t={T},v1={sig(PLAIN, T, BODY)}", secrets=(PLAIN,), relay=True)
case("secret_prefix_stripped_when_signing",
     f"t={T},v1={sig(SECRET[len('whsec_'):], T, BODY)}", relay=False,
     note="key is the whole secret including whsec_")
case("secret_base64_decoded_when_signing",
     f"t={T},v1={sig_raw_key(base64.b64decode(B64_SECRET[len('whsec_'):]), T, BODY)}",
     secrets=(B64_SECRET,), relay=False, note="no base64 decoding of the secret")
case("secret_base64_looking_used_as_text",
     f"t={T},v1={sig(B64_SECRET, T, BODY)}", secrets=(B64_SECRET,), relay=True)
case("secret_non_ascii_utf8", f"t={T},v1={sig('whsec_test_Zoë€', T, BODY)}", secrets=("whsec_test_Zoë€",),
     relay=True, note="key = UTF-8 bytes of the secret")
case("secret_empty", f"t={T},v1={sig_raw_key(b'', T, BODY)}", secrets=("",), relay=False,
     note="never verify with an empty key")
case("rotation_second_secret_matches", f"t={T},v1={sig(SECRET, T, BODY)}", secrets=(SECRET_OLD, SECRET),
     relay=True, note="SDK takes one str secret; a list raises 'webhook secret is required'")
case("rotation_first_secret_matches", f"t={T},v1={sig(SECRET_OLD, T, BODY)}", secrets=(SECRET_OLD, SECRET),
     relay=True)
case("rotation_no_secret_matches", f"t={T},v1={BAD1}", secrets=(SECRET_OLD, SECRET), relay=False)
case("wrong_environment_secret", f"t={T},v1={sig(SECRET_LIVE, T, BODY)}", secrets=(SECRET,), relay=False,
     note="live-signed delivery to a test endpoint")
# bodies
case("unicode_body", f"t={T},v1={sig(SECRET, T, BODY_UNICODE)}", body=BODY_UNICODE, relay=True)
case("empty_body", f"t={T},v1={sig(SECRET, T, b'')}", body=b"", relay=True,
     note="signature valid; SDK then fails json.loads (relay's JSON layer rejects it separately)")
case("non_json_body", f"t={T},v1={sig(SECRET, T, b'hello')}", body=b"hello", relay=True,
     note="signature valid; SDK then fails json.loads")
case("non_utf8_body", f"t={T},v1={sig(SECRET, T, BODY_NON_UTF8)}", body=BODY_NON_UTF8, relay=True,
     note="signature valid over raw bytes; SDK json.loads raises UnicodeDecodeError (a ValueError)")
case("whitespace_padded_body", f"t={T},v1={sig(SECRET, T, BODY_PADDED)}", body=BODY_PADDED, relay=True)
case("large_body_100kb", f"t={T},v1={sig(SECRET, T, BODY_LARGE)}", body=BODY_LARGE, relay=True)
case("large_body_100kb_tampered_near_end", f"t={T},v1={sig(SECRET, T, BODY_LARGE)}", body=BODY_LARGE_TAMPERED,
     relay=False)


# ---- the SDK as judge -------------------------------------------------------------

def run_sdk(secret, header, body, now, tol):
    """Call the SDK verifier with its clock pinned to `now`. Returns (accepted, error)."""
    with mock.patch.object(sdk_webhooks.time, "time", return_value=float(now)):
        try:
            WebhooksResource().construct_event(payload=body, sig_header=header, secret=secret, tolerance=tol)
        except Exception as err:  # record every failure, incl. non-WebhookSignatureError
            return False, f"{type(err).__name__}: {err}"
    return True, None


def signature_ok(accepted, error):
    return accepted or (error or "").startswith("WebhookSignatureError: signed payload was not valid JSON")


# ---- independent model of the contract's rule for the relay ------------------------

_HTTP_VALUE = re.compile(r"^[\t\x20-\x7e]*$")
_PY_INT_ASCII = re.compile(r"^[+-]?[0-9]+(?:_[0-9]+)*$")
_HEX64 = re.compile(r"^[0-9a-fA-F]{64}$")


def relay_model(secrets, header, body, now, tol):
    if not _HTTP_VALUE.match(header):
        return False
    t_raw, v1s = None, []
    for seg in header.split(","):
        if "=" not in seg:
            continue
        k, _, v = seg.partition("=")
        k, v = k.strip(" \t"), v.strip(" \t")
        if k == "t":
            t_raw = v  # last t wins, like the SDK
        elif k == "v1":
            v1s.append(v)
    if not t_raw or not _PY_INT_ASCII.match(t_raw):
        return False
    t = int(t_raw)
    if t <= 0 or abs(now - t) > tol:
        return False
    msg = f"{t}.".encode() + body
    macs = [hmac.new(s.encode(), msg, hashlib.sha256).digest() for s in secrets if s]
    for v in v1s:
        if _HEX64.match(v):
            got = bytes.fromhex(v)
            if any(hmac.compare_digest(got, m) for m in macs):
                return True
    return False


def main():
    if SDK_VERSION != EXPECTED_SDK_VERSION:
        print(f"warning: SDK is {SDK_VERSION}, vectors were written against {EXPECTED_SDK_VERSION}",
              file=sys.stderr)
    names, out, problems = set(), [], []
    for name, secrets, header, body, now, tol, relay, note in CASES:
        assert name not in names, name
        names.add(name)
        sdk_arg = secrets[0] if len(secrets) == 1 else list(secrets)
        accepted, error = run_sdk(sdk_arg, header, body, now, tol)
        per_secret = [run_sdk(s, header, body, now, tol) for s in secrets]
        sig_ok = any(signature_ok(a, e) for a, e in per_secret)
        model = relay_model(secrets, header, body, now, tol)
        if model != relay:
            problems.append(f"{name}: hand label relay_must_accept={relay} but contract model says {model}")
        if sig_ok and _HTTP_VALUE.match(header) and not relay:
            problems.append(f"{name}: SDK accepts the signature but relay_must_accept is false")
        out.append({
            "name": name,
            "secrets": secrets,
            "header": header,
            "body_b64": base64.b64encode(body).decode("ascii"),
            "now": now,
            "tolerance_secs": tol,
            "sdk_accepts": accepted,
            "sdk_error": error,
            "sdk_signature_ok": sig_ok,
            "sdk_per_secret": [a for a, _ in per_secret],
            "relay_must_accept": relay,
            "note": note or None,
        })
    if problems:
        sys.exit("inconsistent vectors:\n  " + "\n  ".join(problems))
    doc = {
        "generated_by": f"tests/vectors/generate.py with 0bit-gate {SDK_VERSION} "
                        "(zerobit.gate.webhooks.WebhooksResource.construct_event)",
        "sdk_version": SDK_VERSION,
        "relay_must_accept_scope": "signature verification only (no JSON parsing of the body)",
        "cases": out,
    }
    with open(OUT, "w", encoding="utf-8") as f:
        json.dump(doc, f, indent=1, ensure_ascii=True)
        f.write("\n")
    width = max(len(c["name"]) for c in out)
    for c in out:
        print(f"{c['name']:<{width}}  sdk={str(c['sdk_accepts']):<5}  relay={str(c['relay_must_accept']):<5}  "
              f"{c['sdk_error'] or ''}")
    print(f"{len(out)} cases -> {OUT}")


if __name__ == "__main__":
    main()
