"""P-256 key agreement and signatures as GBCS uses them.

* ECDH gives the shared secret Z = x coordinate (32 bytes). GBCS keys are static, so Z for a pair of parties never
  changes: it is cached (LRU, keyed by the private key's public point and the peer's public point) and a MAC check
  then costs only a KDF and a GMAC instead of a ~30 µs scalar multiplication.
* Signatures are ECDSA P-256/SHA-256 encoded **raw r||s (64 bytes)** on the wire, never DER (GBCS 3.5).

The cache holds secrets in process memory only; nothing here logs or formats key material.
"""
from __future__ import annotations

import threading
from collections import OrderedDict

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature, encode_dss_signature

from protocols.security.errors import SecurityError

__all__ = [
    "CURVE", "SIGNATURE_LEN", "PublicKeyLike", "load_public_key", "public_point", "ecdh_shared_secret",
    "ecdh_cache_info", "clear_ecdh_cache", "sign", "verify", "raw_to_der", "der_to_raw", "generate_private_key",
]

CURVE = ec.SECP256R1()
SIGNATURE_LEN = 64
_COORD = 32

PublicKeyLike = ec.EllipticCurvePublicKey | ec.EllipticCurvePrivateKey | x509.Certificate | bytes

try:  # RFC 6979 deterministic ECDSA needs cryptography >= 43; fall back to random k on older versions
    ec.ECDSA(hashes.SHA256(), deterministic_signing=True)
    _HAS_DETERMINISTIC = True
except TypeError:  # pragma: no cover - depends on the installed cryptography
    _HAS_DETERMINISTIC = False
_ECDSA = ec.ECDSA(hashes.SHA256())
_ECDSA_DET = ec.ECDSA(hashes.SHA256(), deterministic_signing=True) if _HAS_DETERMINISTIC else _ECDSA
_ECDH = ec.ECDH()


def _require_p256(key) -> None:
    if not isinstance(key.curve, ec.SECP256R1):
        raise SecurityError(f"GBCS keys are P-256, got curve {key.curve.name}")


def load_public_key(value: PublicKeyLike) -> ec.EllipticCurvePublicKey:
    """A P-256 public key from a key object, a certificate, an X9.62 point (65 or 33 bytes), DER or PEM bytes."""
    if isinstance(value, ec.EllipticCurvePublicKey):
        key = value
    elif isinstance(value, ec.EllipticCurvePrivateKey):
        key = value.public_key()
    elif isinstance(value, x509.Certificate):
        key = value.public_key()
        if not isinstance(key, ec.EllipticCurvePublicKey):
            raise SecurityError("certificate does not hold an EC public key")
    elif isinstance(value, (bytes, bytearray, memoryview)):
        data = bytes(value)
        try:
            if len(data) in (65, 33) and data[0] in (2, 3, 4):
                key = ec.EllipticCurvePublicKey.from_encoded_point(CURVE, data)
            elif data.startswith(b"-----BEGIN CERTIFICATE"):
                return load_public_key(x509.load_pem_x509_certificate(data))
            elif data.startswith(b"-----BEGIN"):
                key = serialization.load_pem_public_key(data)
            else:
                try:
                    key = serialization.load_der_public_key(data)
                except ValueError:
                    return load_public_key(x509.load_der_x509_certificate(data))
        except (ValueError, TypeError) as e:
            raise SecurityError(f"not a P-256 public key: {e}") from None
        if not isinstance(key, ec.EllipticCurvePublicKey):
            raise SecurityError("not an EC public key")
    else:
        raise SecurityError(f"cannot use {type(value).__name__} as a public key")
    _require_p256(key)
    return key


_POINTS: OrderedDict[int, tuple[object, bytes]] = OrderedDict()  # id(key object) -> (that object, its point)
_POINTS_MAX = 4096
_POINTS_LOCK = threading.Lock()


def public_point(key: PublicKeyLike) -> bytes:
    """The 65-byte uncompressed X9.62 point: the identity of a key pair (public, safe to log and to use as a dict key).

    Points of key objects are memoised by identity (the entry keeps the object alive, so an id is never reused
    while cached): serialising a point costs ~3 µs, more than the whole cached MAC check."""
    if isinstance(key, (ec.EllipticCurvePublicKey, ec.EllipticCurvePrivateKey)):
        with _POINTS_LOCK:
            hit = _POINTS.get(id(key))
        if hit is not None and hit[0] is key:
            return hit[1]
        point = load_public_key(key).public_bytes(serialization.Encoding.X962,
                                                  serialization.PublicFormat.UncompressedPoint)
        with _POINTS_LOCK:
            _POINTS[id(key)] = (key, point)
            while len(_POINTS) > _POINTS_MAX:
                _POINTS.popitem(last=False)
        return point
    return load_public_key(key).public_bytes(serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint)


class _LruSecrets:
    """A small thread-safe LRU of ECDH secrets; it never exposes its contents in repr."""

    def __init__(self, maxsize: int = 4096):
        self.maxsize = maxsize
        self._data: OrderedDict[tuple[bytes, bytes], bytes] = OrderedDict()
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    def get(self, key: tuple[bytes, bytes]) -> bytes | None:
        with self._lock:
            value = self._data.get(key)
            if value is None:
                self.misses += 1
                return None
            self._data.move_to_end(key)
            self.hits += 1
            return value

    def put(self, key: tuple[bytes, bytes], value: bytes) -> None:
        with self._lock:
            self._data[key] = value
            self._data.move_to_end(key)
            while len(self._data) > self.maxsize:
                self._data.popitem(last=False)

    def clear(self) -> None:
        with self._lock:
            self._data.clear()
            self.hits = self.misses = 0

    def __repr__(self) -> str:
        return f"<ECDH secret cache: {len(self._data)} entries>"


_SECRETS = _LruSecrets()


def ecdh_shared_secret(private_key: ec.EllipticCurvePrivateKey, peer_public: PublicKeyLike) -> bytes:
    """Z = x coordinate of private × peer public (32 bytes), cached per (own public point, peer public point).

    Symmetric by construction: A's private with B's public gives the same Z as B's private with A's public."""
    if not isinstance(private_key, ec.EllipticCurvePrivateKey):
        raise SecurityError(f"ECDH needs an EC private key, got {type(private_key).__name__}")
    _require_p256(private_key)
    cache_key = (public_point(private_key), public_point(peer_public))
    secret = _SECRETS.get(cache_key)
    if secret is None:
        secret = private_key.exchange(_ECDH, load_public_key(peer_public))
        _SECRETS.put(cache_key, secret)
    return secret


def ecdh_cache_info() -> dict:
    """Hit/miss counters and size of the ECDH cache (no secrets)."""
    return {"hits": _SECRETS.hits, "misses": _SECRETS.misses, "size": len(_SECRETS._data), "maxsize": _SECRETS.maxsize}


def clear_ecdh_cache() -> None:
    """Forget every cached shared secret (and the memoised key points, which keep key objects alive)."""
    _SECRETS.clear()
    with _POINTS_LOCK:
        _POINTS.clear()


def raw_to_der(signature: bytes) -> bytes:
    """GBCS raw r||s (64 bytes) to the DER form `cryptography` verifies."""
    if len(signature) != SIGNATURE_LEN:
        raise SecurityError(f"a GBCS signature is {SIGNATURE_LEN} bytes (r||s), got {len(signature)}")
    return encode_dss_signature(int.from_bytes(signature[:_COORD], "big"), int.from_bytes(signature[_COORD:], "big"))


def der_to_raw(der: bytes) -> bytes:
    """DER ECDSA signature to GBCS raw r||s, each integer left-padded to 32 bytes."""
    r, s = decode_dss_signature(der)
    return r.to_bytes(_COORD, "big") + s.to_bytes(_COORD, "big")


def sign(private_key: ec.EllipticCurvePrivateKey, data: bytes, *, deterministic: bool = False) -> bytes:
    """ECDSA P-256/SHA-256 signature of `data` as raw r||s. `deterministic` uses RFC 6979 for reproducible output."""
    if not isinstance(private_key, ec.EllipticCurvePrivateKey):
        raise SecurityError(f"signing needs an EC private key, got {type(private_key).__name__}")
    _require_p256(private_key)
    return der_to_raw(private_key.sign(data, _ECDSA_DET if deterministic else _ECDSA))


def verify(public_key: PublicKeyLike, data: bytes, signature: bytes) -> bool:
    """True when `signature` (raw r||s) is a valid ECDSA P-256/SHA-256 signature of `data` by `public_key`."""
    if len(signature) != SIGNATURE_LEN:
        return False
    key = load_public_key(public_key)
    try:
        key.verify(raw_to_der(signature), data, _ECDSA)
    except InvalidSignature:
        return False
    return True


def generate_private_key(secret_scalar: int | None = None) -> ec.EllipticCurvePrivateKey:
    """A new P-256 private key: random, or from a given scalar (used by the seeded test PKI for reproducible keys)."""
    if secret_scalar is None:
        return ec.generate_private_key(CURVE)
    try:
        return ec.derive_private_key(secret_scalar, CURVE)
    except ValueError as e:
        raise SecurityError(f"invalid P-256 private scalar: {e}") from None
