"""``fedrec deploy credentials <dir>``: the TLS and SuperNode-authentication files of a deployment.

Writes, with the ``cryptography`` package (ECDSA on NIST P-384, SHA-384 signatures):

``ca.crt`` / ``ca.key``
    A self-signed certificate authority. ``ca.crt`` goes to every SuperNode
    (``--root-certificates``), to the SuperLink (``--ssl-ca-certfile``) and to whoever
    runs ``flwr`` (``root-certificates`` in its config); ``ca.key`` stays offline.
``server.pem`` / ``server.key``
    The SuperLink's certificate, signed by the CA, valid for the given hosts (IP
    addresses or DNS names) plus ``localhost`` and ``127.0.0.1`` (the SuperLink's own
    SuperExec reaches it on loopback through the same certificate).
``node-<platform>.key`` / ``node-<platform>.pub``
    One SuperNode key pair per platform in OpenSSH format, the format Flower 1.41's
    node authentication reads (``flower-supernode --auth-supernode-private-key`` loads
    the private key with ``load_ssh_private_key``; ``flwr supernode register`` the public
    one with ``load_ssh_public_key``). Each private key belongs on its platform's
    machine only.

Private keys are written with mode 0600, certificates and public keys 0644, each file
atomically. Existing files are never replaced unless ``--force`` is given.
"""

from __future__ import annotations

import argparse
import datetime
import ipaddress
import os
import re
import sys
from collections.abc import Sequence
from pathlib import Path

from cryptography import x509

from fedrec.io import atomic_write

DEFAULT_PLATFORMS = ("video", "ecommerce", "social")
PLATFORM_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]*$")
HOST_LABEL = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?$")
PRIVATE, PUBLIC = 0o600, 0o644


def credential_files(platforms: Sequence[str]) -> dict[str, str]:
    """The files :func:`write_credentials` writes: ``{role: file name}``."""
    files = {"ca_cert": "ca.crt", "ca_key": "ca.key", "server_cert": "server.pem", "server_key": "server.key"}
    for p in platforms:
        files[f"node_key:{p}"] = f"node-{p}.key"
        files[f"node_pub:{p}"] = f"node-{p}.pub"
    return files


def _check(hosts: Sequence[str], platforms: Sequence[str], days: int) -> None:
    if not hosts:
        raise ValueError("at least one --host is needed (the address the SuperNodes use to reach the SuperLink)")
    for h in hosts:
        try:
            ipaddress.ip_address(h)
        except ValueError:
            if len(h) > 253 or not all(HOST_LABEL.match(label) for label in h.split(".")):
                raise ValueError(f"--host {h!r} is neither an IP address nor a DNS name") from None
    if not platforms:
        raise ValueError("at least one platform is needed")
    bad = [p for p in platforms if not PLATFORM_NAME.match(p)]
    if bad:
        raise ValueError(f"platform name {bad[0]!r} must be letters, digits, '-' or '_' (it names a file)")
    dupes = sorted({p for p in platforms if list(platforms).count(p) > 1})
    if dupes:
        raise ValueError(f"platform {dupes[0]!r} is listed twice: each platform gets exactly one key pair")
    if days < 1:
        raise ValueError(f"--days must be >= 1, got {days}")


def _key_usage(*allowed: str) -> x509.KeyUsage:
    """An X.509 key usage extension with exactly ``allowed`` set."""
    flags = (
        *("digital_signature", "content_commitment", "key_encipherment", "data_encipherment", "key_agreement"),
        *("key_cert_sign", "crl_sign", "encipher_only", "decipher_only"),
    )
    return x509.KeyUsage(**{f: f in allowed for f in flags})


def _write(path: Path, data: bytes, mode: int) -> None:
    atomic_write(path, lambda fh: fh.write(data), mode=mode)  # its mode set before it is renamed into place


def write_credentials(
    out_dir: str | os.PathLike[str],
    hosts: Sequence[str] = ("127.0.0.1",),
    platforms: Sequence[str] = DEFAULT_PLATFORMS,
    days: int = 365,
    force: bool = False,
) -> dict[str, Path]:
    """Write a CA, the SuperLink's certificate and one SuperNode key pair per platform.

    Parameters
    ----------
    out_dir : path-like
        Folder of the files (created; mode 0700 when new).
    hosts : sequence of str
        IP addresses or DNS names the SuperNodes and ``flwr`` use to reach the SuperLink
        (subject alternative names of its certificate, besides ``localhost`` and
        ``127.0.0.1``).
    platforms : sequence of str
        One key pair per platform.
    days : int, default 365
        Validity of the certificates.
    force : bool, default False
        Replace existing files.

    Returns
    -------
    dict
        ``{role: path}`` as in :func:`credential_files`.

    Raises
    ------
    ValueError
        On a bad host or platform name, duplicate platforms, ``days < 1``.
    FileExistsError
        When a file exists and ``force`` is off (nothing is written then).
    """
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    _check(hosts, platforms, days)
    out = Path(out_dir)
    paths = {role: out / name for role, name in credential_files(platforms).items()}
    existing = sorted(str(p) for p in paths.values() if p.exists())
    if existing and not force:
        raise FileExistsError(f"{existing[0]} exists ({len(existing)} file(s) in all); pass --force to replace them")
    if not out.exists():
        out.mkdir(parents=True, mode=0o700)

    def pem_key(key: ec.EllipticCurvePrivateKey) -> bytes:
        return key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )

    now = datetime.datetime.now(datetime.UTC) - datetime.timedelta(minutes=5)  # clock skew
    until = now + datetime.timedelta(days=days)
    ca_key = ec.generate_private_key(ec.SECP384R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "fedrec deployment CA")])
    ca_ski = x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key())
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(until)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            _key_usage("digital_signature", "key_cert_sign", "crl_sign"),
            critical=True,
        )
        .add_extension(ca_ski, critical=False)
        .sign(ca_key, hashes.SHA384())
    )
    server_key = ec.generate_private_key(ec.SECP384R1())
    names: list[x509.GeneralName] = []
    for h in [*hosts, "127.0.0.1", "localhost"]:
        try:
            entry: x509.GeneralName = x509.IPAddress(ipaddress.ip_address(h))
        except ValueError:
            entry = x509.DNSName(h)
        if entry not in names:
            names.append(entry)
    server_cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hosts[0])]))
        .issuer_name(ca_name)
        .public_key(server_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(until)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(
            _key_usage("digital_signature", "key_agreement"),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(server_key.public_key()), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_ski), critical=False)
        .sign(ca_key, hashes.SHA384())
    )
    _write(paths["ca_key"], pem_key(ca_key), PRIVATE)
    _write(paths["ca_cert"], ca_cert.public_bytes(serialization.Encoding.PEM), PUBLIC)
    _write(paths["server_key"], pem_key(server_key), PRIVATE)
    _write(paths["server_cert"], server_cert.public_bytes(serialization.Encoding.PEM), PUBLIC)
    for p in platforms:
        key = ec.generate_private_key(ec.SECP384R1())
        private = key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH, serialization.NoEncryption()
        )
        public = key.public_key().public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
        _write(paths[f"node_key:{p}"], private, PRIVATE)
        _write(paths[f"node_pub:{p}"], public + f" fedrec-{p}\n".encode(), PUBLIC)
    return paths


def deploy_main(argv: list[str]) -> int:
    """``fedrec deploy credentials <dir> [--host H ...] [--platforms P ...] [--days N] [--force]``."""
    parser = argparse.ArgumentParser(prog="fedrec deploy", description="Deployment helpers.")
    sub = parser.add_subparsers(dest="action", required=True)
    cred = sub.add_parser(
        "credentials",
        help="write a CA, the SuperLink's TLS certificate and one SuperNode key pair per platform",
        description="Write ca.crt/ca.key, server.pem/server.key (signed by the CA, SANs for the hosts plus "
        "localhost and 127.0.0.1) and node-<platform>.key/.pub (ECDSA P-384, OpenSSH format, as Flower's "
        "SuperNode authentication expects). Private keys get mode 0600. See docs/DEPLOY.md.",
    )
    cred.add_argument("dir", help="output folder (created)")
    cred.add_argument(
        "--host",
        action="append",
        help="IP address or DNS name of the SuperLink as the SuperNodes reach it (repeatable; default 127.0.0.1)",
    )
    cred.add_argument("--platforms", nargs="+", default=list(DEFAULT_PLATFORMS), help="one key pair each")
    cred.add_argument("--days", type=int, default=365, help="certificate validity in days (default 365)")
    cred.add_argument("--force", action="store_true", help="replace existing files")
    args = parser.parse_args(argv)
    try:
        paths = write_credentials(args.dir, args.host or ["127.0.0.1"], args.platforms, args.days, args.force)
    except (ValueError, FileExistsError) as exc:
        print(f"fedrec: error: {exc}", file=sys.stderr)
        return 2
    for role, path in paths.items():
        print(f"{role:24s} {path}")
    return 0
