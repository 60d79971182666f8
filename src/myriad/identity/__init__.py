"""Identity: tenants, API keys, users' JWTs, agent workload identities, delegation
(RFC 8693 token exchange), capabilities as scopes, the credential vault, signed
outbound requests (RFC 9421, Web Bot Auth) and the audit log.

May import: storage.
"""

from myriad.identity._pg_schema import MIGRATIONS as IDENTITY_MIGRATIONS
from myriad.identity.audit import AuditEntry, AuditLog
from myriad.identity.capabilities import Scopes, parse_scopes, require, sandbox_scopes
from myriad.identity.httpsig import DIRECTORY_MEDIA_TYPE, DIRECTORY_PATH, NonceCache, RequestSigner, verify_request
from myriad.identity.keys import KeyInfo, KeyStore, validate_tenant
from myriad.identity.outbound import OutboundAuthorizer, SignedTransport
from myriad.identity.owners import OwnerStore
from myriad.identity.principal import DOORS, Principal, resource
from myriad.identity.service import AgentIdentity, Identity
from myriad.identity.tokens import GRANT_TOKEN_EXCHANGE, TOKEN_TYPE_ACCESS, TOKEN_TYPE_JWT, act_chain, spiffe_id
from myriad.identity.vault import CredentialInfo, CredentialVault, Redactor

__all__ = [
    "AgentIdentity",
    "AuditEntry",
    "AuditLog",
    "CredentialInfo",
    "CredentialVault",
    "DIRECTORY_MEDIA_TYPE",
    "DIRECTORY_PATH",
    "DOORS",
    "GRANT_TOKEN_EXCHANGE",
    "IDENTITY_MIGRATIONS",
    "Identity",
    "KeyInfo",
    "KeyStore",
    "NonceCache",
    "OutboundAuthorizer",
    "OwnerStore",
    "Principal",
    "Redactor",
    "RequestSigner",
    "Scopes",
    "SignedTransport",
    "TOKEN_TYPE_ACCESS",
    "TOKEN_TYPE_JWT",
    "act_chain",
    "parse_scopes",
    "require",
    "sandbox_scopes",
    "resource",
    "spiffe_id",
    "validate_tenant",
    "verify_request",
]
