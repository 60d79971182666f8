"""The price book: versioned prices with effective times, decimal arithmetic.

A ``PriceVersion`` is a complete list of prices that applies from its
``effective_at`` until the next version's. A usage event is priced with the version
in effect at the event's *time*, so a price change never reaches back: the ledger
refuses a version whose effective time is earlier than now or than the newest
existing version's.

A ``Price`` names a resource and, optionally, a model and deployment; the most
specific match wins (resource+model+deployment, then resource+model, then
resource). A resource with no price costs zero (it is still counted).
"""

from __future__ import annotations

from bisect import bisect_right
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

from myriad.errors import ConfigError, InvalidRequest
from myriad.metering._events import (
    COST_SCALE,
    QUANTITY_SCALE,
    Usage,
    _decimal,
    check_resource,
    iso,
    parse_time,
    to_us,
)


@dataclass(frozen=True)
class Price:
    """``unit_price`` of currency per ``per`` units of ``resource`` (e.g. 0.15 per 1,000,000 tokens)."""

    resource: str
    unit_price: Decimal
    per: int = 1
    model: str | None = None
    deployment: str | None = None

    def __post_init__(self) -> None:
        check_resource(self.resource)
        object.__setattr__(self, "unit_price", _decimal(self.unit_price, f"price of {self.resource}"))
        if self.unit_price < 0:
            raise InvalidRequest(f"price of {self.resource} must not be negative")
        if not isinstance(self.per, int) or isinstance(self.per, bool) or self.per <= 0:
            raise InvalidRequest(f"'per' of the price of {self.resource} must be a positive integer")
        if self.deployment is not None and self.model is None:
            raise InvalidRequest(f"price of {self.resource} names a deployment but no model")

    def cost_nanos(self, quantity_micro: int) -> int:
        """Exact cost of ``quantity_micro`` micro-units, rounded half-even to nanos.

        Integer arithmetic on the price as an exact fraction (no Decimal per call): the
        same result as ``Decimal(q) * unit_price * 1e9 / (per * 1e6)`` rounded half-even."""
        ratio = self.__dict__.get("_ratio")
        if ratio is None:
            num, den = self.unit_price.as_integer_ratio()
            ratio = (num * COST_SCALE, den * self.per * QUANTITY_SCALE)
            object.__setattr__(self, "_ratio", ratio)
        if quantity_micro < 0:
            return -self.cost_nanos(-quantity_micro)
        q, r = divmod(quantity_micro * ratio[0], ratio[1])
        twice = 2 * r
        if twice > ratio[1] or (twice == ratio[1] and q & 1):
            q += 1
        return q

    def to_json(self) -> dict[str, Any]:
        d: dict[str, Any] = {"resource": self.resource, "unit_price": str(self.unit_price), "per": self.per}
        if self.model is not None:
            d["model"] = self.model
        if self.deployment is not None:
            d["deployment"] = self.deployment
        return d

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> "Price":
        if not isinstance(d, Mapping) or "resource" not in d or "unit_price" not in d:
            raise InvalidRequest(f"a price needs 'resource' and 'unit_price', got {d!r}")
        unknown = set(d) - {"resource", "unit_price", "per", "model", "deployment"}
        if unknown:
            raise InvalidRequest(f"a price has unknown fields {sorted(unknown)}")
        return cls(
            resource=d["resource"],
            unit_price=_decimal(d["unit_price"], "unit_price"),
            per=d.get("per", 1),
            model=d.get("model"),
            deployment=d.get("deployment"),
        )


@dataclass(frozen=True)
class PriceVersion:
    """A complete set of prices in effect from ``effective_at``."""

    version: int
    effective_at: datetime
    prices: tuple[Price, ...]
    currency: str = "USD"
    _index: dict[tuple[str, str | None, str | None], Price] = field(default_factory=dict, compare=False, repr=False)

    def __post_init__(self) -> None:
        index: dict[tuple[str, str | None, str | None], Price] = {}
        for p in self.prices:
            key = (p.resource, p.model, p.deployment)
            if key in index:
                raise InvalidRequest(f"price version lists {p.resource} for model={p.model} deployment={p.deployment} twice")
            index[key] = p
        object.__setattr__(self, "_index", index)

    def price_of(self, resource: str, model: str | None = None, deployment: str | None = None) -> Price | None:
        """The most specific price for a resource, or None (free)."""
        idx = self._index
        return idx.get((resource, model, deployment)) or idx.get((resource, model, None)) or idx.get((resource, None, None))

    def cost_lines(self, quantities_micro: Mapping[str, int], model: str | None, deployment: str | None) -> dict[str, int]:
        """Cost in nanos of each resource's quantity."""
        out: dict[str, int] = {}
        for r, q in quantities_micro.items():
            p = self.price_of(r, model, deployment)
            out[r] = p.cost_nanos(q) if p is not None else 0
        return out

    def to_json(self) -> dict[str, Any]:
        return {
            "version": self.version,
            "effective_at": iso(self.effective_at),
            "currency": self.currency,
            "prices": [p.to_json() for p in self.prices],
        }

    @classmethod
    def from_json(cls, d: Mapping[str, Any], version: int | None = None) -> "PriceVersion":
        if not isinstance(d, Mapping):
            raise InvalidRequest("a price version must be an object")
        prices = d.get("prices")
        if not isinstance(prices, list):
            raise InvalidRequest("a price version needs a list 'prices'")
        return cls(
            version=int(version if version is not None else d.get("version", 0)),
            effective_at=parse_time(d.get("effective_at"), "effective_at"),
            prices=tuple(Price.from_json(p) for p in prices),
            currency=str(d.get("currency", "USD")),
        )


class PriceBook:
    """All price versions, ordered by effective time; prices a usage at a time."""

    def __init__(self, versions: Iterable[PriceVersion] = ()) -> None:
        self._versions: list[PriceVersion] = sorted(versions, key=lambda v: v.effective_at)
        self._starts = [to_us(v.effective_at) for v in self._versions]

    @property
    def versions(self) -> Sequence[PriceVersion]:
        return tuple(self._versions)

    @property
    def latest(self) -> PriceVersion | None:
        return self._versions[-1] if self._versions else None

    def at(self, t_us: int) -> PriceVersion | None:
        """The version in effect at ``t_us`` (microseconds since epoch), if any."""
        i = bisect_right(self._starts, t_us)
        return self._versions[i - 1] if i else None

    def price(self, usage: Usage, t_us: int) -> tuple[int | None, dict[str, int], dict[str, int]]:
        """(version, quantities in micro-units, cost in nanos per resource) for ``usage`` at ``t_us``."""
        micro = usage.micro()
        v = self.at(t_us)
        if v is None:
            return None, micro, {r: 0 for r in micro}
        # priced once per usage and version: the pipeline's pricer, the admission view and
        # the ledger row all ask for the same usage object's cost
        memo = usage.__dict__.get("_priced")
        if memo is not None and memo[0] is v:
            return v.version, micro, memo[1]
        lines = v.cost_lines(micro, usage.model, usage.deployment)
        object.__setattr__(usage, "_priced", (v, lines))
        return v.version, micro, lines

    def estimate_nanos(self, usage: Usage, t_us: int) -> int:
        """Total cost of ``usage`` at ``t_us``, in nanos."""
        return sum(self.price(usage, t_us)[2].values())


def load_price_file(path: str | Path) -> list[dict[str, Any]]:
    """Read price versions from a JSON or TOML file: ``{"versions": [{effective_at, currency, prices}]}``.

    Returns the raw version mappings (the ledger assigns version numbers).
    """
    p = Path(path)
    try:
        text = p.read_bytes()
    except FileNotFoundError:
        raise ConfigError(f"price book file {p} does not exist") from None
    from myriad import safe_json

    data = safe_json.config_loads(text, f"price book file {p}", toml=p.suffix == ".toml")
    versions = data.get("versions") if isinstance(data, dict) else None
    if not isinstance(versions, list):
        raise ConfigError(f"price book file {p} needs a list 'versions'")
    return versions


__all__ = ["Price", "PriceVersion", "PriceBook", "load_price_file"]
