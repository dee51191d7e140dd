"""Synthetic country and ASN databases (.mmdb) that match the generator's address ranges, so
that `demo` shows the country and network panels without a real database. Their database
type says `synthetic`, and so does everything that shows it."""

import os
from pathlib import Path

COUNTRIES = ("DE", "NL", "US", "FR", "GB", "RU", "IR", "CN", "TR", "AE", "FI", "SE", "PL", "JP")
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


def write_synthetic_geoip(folder: Path) -> tuple[Path, Path]:
    """A country and an ASN database covering the generator's sources (16.0.0.0 to
    215.255.255.255, 2001:db8::/32): one country per /8, one private-use ASN per /10."""
    folder.mkdir(parents=True, exist_ok=True)
    countries: dict[str, dict] = {"2001:db8::/32": {"country": {"iso_code": "NL"}}}
    networks: dict[str, dict] = {
        "2001:db8::/32": {
            "autonomous_system_number": 4_200_000_000,
            "autonomous_system_organization": "Synthetic IPv6 Transit",
        }
    }
    for first in range(16, 216):
        # popular countries hold more of the space, as in real logs
        pick = COUNTRIES[min(int((first - 16) ** 1.5 / 200), len(COUNTRIES) - 1)]
        countries[f"{first}.0.0.0/8"] = {"country": {"iso_code": pick}}
        for quarter in range(4):
            number = 64512 + (first - 16) * 4 + quarter
            kind = ("Mobile", "Broadband", "Hosting", "University")[(first + quarter) % 4]
            networks[f"{first}.{quarter * 64}.0.0/10"] = {
                "autonomous_system_number": number,
                "autonomous_system_organization": f"Synthetic {kind} {number}",
            }
    return (
        write_mmdb(folder / "synthetic-country.mmdb", countries, f"{SYNTHETIC}-Country"),
        write_mmdb(folder / "synthetic-asn.mmdb", networks, f"{SYNTHETIC}-ASN"),
    )
