"""The room's public surface is exactly what __init__ names, and building it touches nothing."""

import myriad.identity as identity
from myriad.identity import Identity, KeyStore
from myriad.settings import IdentitySettings


def test_exports_are_exactly_the_intended_names():
    assert sorted(identity.__all__) == sorted([
        "AgentIdentity", "AuditEntry", "AuditLog", "CredentialInfo", "CredentialVault", "DIRECTORY_MEDIA_TYPE",
        "DIRECTORY_PATH", "DOORS", "GRANT_TOKEN_EXCHANGE", "IDENTITY_MIGRATIONS", "Identity", "KeyInfo", "KeyStore", "NonceCache",
        "OutboundAuthorizer", "OwnerStore", "Principal", "Redactor", "RequestSigner", "Scopes", "SignedTransport",
        "TOKEN_TYPE_ACCESS", "TOKEN_TYPE_JWT", "act_chain", "parse_scopes", "require", "resource", "sandbox_scopes",
        "spiffe_id", "validate_tenant", "verify_request",
    ])
    for name in identity.__all__:
        assert getattr(identity, name) is not None


def test_building_identity_creates_no_files_until_used(tmp_path):
    Identity(IdentitySettings(), KeyStore(tmp_path), tmp_path)
    assert list(tmp_path.iterdir()) == []
