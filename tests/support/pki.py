"""A throw-away private CA and a server certificate it signs (CN localhost, SAN localhost and
127.0.0.1), made with openssl, for the tests of TLS verified against a cloud's own CA."""

import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest


@dataclass(frozen=True)
class Pki:
    """The folder (as tools/rabbitcluster --tls reads it) and its files."""

    folder: Path

    @property
    def ca(self) -> str:
        return str(self.folder / "ca.pem")

    @property
    def cert(self) -> str:
        return str(self.folder / "cert.pem")

    @property
    def key(self) -> str:
        return str(self.folder / "key.pem")


def _openssl(*args: str) -> None:
    subprocess.run(["openssl", *args], check=True, capture_output=True)


def make_pki(folder: Path) -> Pki:
    """ca.pem (a self-signed CA), cert.pem and key.pem (localhost, signed by it) in ``folder``;
    skips the test when openssl is missing."""
    if not shutil.which("openssl"):
        pytest.skip("openssl is needed to make the test certificates")
    folder.mkdir(parents=True, exist_ok=True)
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=cloudmanagers test CA",
             "-keyout", str(folder / "ca.key"), "-out", str(folder / "ca.pem"))
    _openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=localhost",
             "-keyout", str(folder / "key.pem"), "-out", str(folder / "server.csr"))
    (folder / "server.ext").write_text("subjectAltName = DNS:localhost, IP:127.0.0.1\nbasicConstraints = CA:FALSE\n"
                                       "extendedKeyUsage = serverAuth\n")
    _openssl("x509", "-req", "-in", str(folder / "server.csr"), "-CA", str(folder / "ca.pem"),
             "-CAkey", str(folder / "ca.key"), "-CAcreateserial", "-days", "2",
             "-extfile", str(folder / "server.ext"), "-out", str(folder / "cert.pem"))
    return Pki(folder)
