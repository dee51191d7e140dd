"""Synthetic country and ASN databases (.mmdb) that match the generator's address ranges, so
that `demo` shows the country and network panels without a real database. Their database
type says `synthetic`, and so does everything that shows it."""

import os
from pathlib import Path

COUNTRIES = ("DE", "NL", "US", "FR", "GB", "RU", "IR", "CN", "TR", "AE", "FI", "SE", "PL", "JP")
# shares (in %) of the countries above: a few dominate, as in real logs
WEIGHTS = (30, 15, 12, 8, 7, 6, 5, 4, 3, 3, 2, 2, 2, 1)
KINDS = ("Mobile", "Broadband", "Hosting", "University")
SYNTHETIC = "xray-pipeline-synthetic"


def write_mmdb(path: Path, networks: dict[str, dict], database_type: str) -> Path:
    """A MaxMind-format database of `networks` (CIDR -> record), replacing `path` whole."""
    from mmdb_writer import MMDBWriter
    from netaddr import IPSet

    writer = MMDBWriter(ip_version=6, ipv4_compatible=True, database_type=database_type)
    for network, record in networks.items():
        writer.insert_network(IPSet([network]), record)
    tmp = path.with_suffix(".tmp")
    writer.to_db_file(str(tmp))
    os.replace(tmp, path)  # readers see the old file or the new one, never half of one
    return path


def _pick(n: int, weights: tuple[int, ...]) -> int:
    """A deterministic weighted pick for network number `n` (Knuth's multiplicative hash)."""
    point = (n * 2654435761 >> 8) % sum(weights)
    for i, weight in enumerate(weights):
        point -= weight
        if point < 0:
            return i
    return len(weights) - 1


def write_synthetic_geoip(folder: Path) -> tuple[Path, Path]:
    """A country and an ASN database covering the generator's sources (16.0.0.0 to
    215.255.255.255, 2001:db8::/32): a country per /16 and a private-use ASN per /18 inside
    16.0.0.0/8, where the sources of a few hundred users fall, per /8 and /10 beyond."""
    folder.mkdir(parents=True, exist_ok=True)
    countries: dict[str, dict] = {"2001:db8::/32": {"country": {"iso_code": "NL"}}}
    networks: dict[str, dict] = {
        "2001:db8::/32": {
            "autonomous_system_number": 4_200_000_000,
            "autonomous_system_organization": "Synthetic IPv6 Transit",
        }
    }

    def asn(network: str, n: int) -> None:
        number = 64512 + _pick(n, (1,) * 40) * 7 + n % 7
        networks[network] = {
            "autonomous_system_number": number,
            "autonomous_system_organization": f"Synthetic {KINDS[number % 4]} {number}",
        }

    for second in range(256):
        countries[f"16.{second}.0.0/16"] = {
            "country": {"iso_code": COUNTRIES[_pick(second, WEIGHTS)]}
        }
        for quarter in range(4):
            asn(f"16.{second}.{quarter * 64}.0/18", second * 4 + quarter)
    for first in range(17, 216):
        countries[f"{first}.0.0.0/8"] = {"country": {"iso_code": COUNTRIES[_pick(first, WEIGHTS)]}}
        for quarter in range(4):
            asn(f"{first}.{quarter * 64}.0.0/10", first * 4 + quarter)
    return (
        write_mmdb(folder / "synthetic-country.mmdb", countries, f"{SYNTHETIC}-Country"),
        write_mmdb(folder / "synthetic-asn.mmdb", networks, f"{SYNTHETIC}-ASN"),
    )
