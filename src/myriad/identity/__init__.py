"""Identity: tenants, API keys and principals (agent workload identities, delegation,
capabilities and the credential vault follow here).

May import: storage.
"""

from myriad.identity.keys import KeyInfo, KeyStore, Principal, validate_tenant

__all__ = ["KeyInfo", "KeyStore", "Principal", "validate_tenant"]
