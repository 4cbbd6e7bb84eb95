"""``fedrec deploy credentials``: the CA, the SuperLink certificate and the SuperNode key pairs."""

from __future__ import annotations

import ipaddress
import ssl
import stat
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID

from fedrec.cli.deploy import write_credentials
from fedrec.cli.main import main


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_credentials_chain_sans_and_keys(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "creds"
    assert main(["deploy", "credentials", str(out), "--host", "10.1.2.3", "--host", "link.example.org"]) == 0
    assert "node_key:social" in capsys.readouterr().out
    ca = x509.load_pem_x509_certificate((out / "ca.crt").read_bytes())
    server = x509.load_pem_x509_certificate((out / "server.pem").read_bytes())
    # the chain: the server certificate is signed by the CA, which is a CA and self-signed
    server.verify_directly_issued_by(ca)
    ca.verify_directly_issued_by(ca)
    assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    assert not server.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    assert ExtendedKeyUsageOID.SERVER_AUTH in server.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    san = server.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert set(san.get_values_for_type(x509.IPAddress)) == {
        ipaddress.ip_address("10.1.2.3"),
        ipaddress.ip_address("127.0.0.1"),
    }
    assert set(san.get_values_for_type(x509.DNSName)) == {"link.example.org", "localhost"}
    # the server key matches its certificate; the private keys are private
    server_key = serialization.load_pem_private_key((out / "server.key").read_bytes(), None)
    assert server_key.public_key() == server.public_key()
    serialization.load_pem_private_key((out / "ca.key").read_bytes(), None)
    for name in ("ca.key", "server.key", "node-video.key", "node-ecommerce.key", "node-social.key"):
        assert _mode(out / name) == 0o600, name
    assert _mode(out / "ca.crt") == 0o644 and _mode(out) == 0o700
    # Python's own TLS stack accepts the pair and trusts the CA (as the SuperNodes and flwr do)
    ssl.create_default_context(ssl.Purpose.CLIENT_AUTH).load_cert_chain(out / "server.pem", out / "server.key")
    ssl.create_default_context(cafile=out / "ca.crt")
    # one SuperNode key pair per platform, in the OpenSSH format Flower loads, on P-384, all distinct
    publics = set()
    for p in ("video", "ecommerce", "social"):
        private = serialization.load_ssh_private_key((out / f"node-{p}.key").read_bytes(), None)
        public = serialization.load_ssh_public_key((out / f"node-{p}.pub").read_bytes())
        assert isinstance(private, ec.EllipticCurvePrivateKey) and isinstance(public, ec.EllipticCurvePublicKey)
        assert isinstance(public.curve, ec.SECP384R1)
        assert private.public_key() == public
        publics.add(public.public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH))
    assert len(publics) == 3


def test_existing_files_are_kept_unless_forced(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    paths = write_credentials(tmp_path, platforms=["video"])
    before = paths["ca_cert"].read_bytes()
    assert main(["deploy", "credentials", str(tmp_path), "--platforms", "video"]) == 2
    assert "ca.crt exists" in capsys.readouterr().err and paths["ca_cert"].read_bytes() == before
    write_credentials(tmp_path, platforms=["video"], force=True)
    assert paths["ca_cert"].read_bytes() != before


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"platforms": ["video", "video"]}, "listed twice"),
        ({"platforms": ["../video"]}, "must be letters, digits"),
        ({"hosts": ["bad host"]}, "neither an IP address nor a DNS name"),
        ({"hosts": []}, "at least one --host"),
        ({"days": 0}, "--days must be >= 1"),
    ],
)
def test_bad_arguments_are_refused_and_nothing_is_written(tmp_path: Path, kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        write_credentials(tmp_path / "creds", **kwargs)
    assert not (tmp_path / "creds").exists()
