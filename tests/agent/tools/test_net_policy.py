"""The SSRF address policy as pure checks: nothing here connects anywhere."""

from __future__ import annotations

import pytest

from agent.tools.net_policy import AddressPolicy, AddressRefused, parse_networks
from config.errors import ConfigError
from config.settings import ToolsSettings

STRICT = AddressPolicy()
PRIVATE_OK = AddressPolicy(allow_private=True)

INTERNAL = [
    "127.0.0.1",
    "127.0.0.2",
    "10.0.0.1",
    "172.16.5.4",
    "192.168.1.1",
    "169.254.1.1",
    "100.64.0.1",
    "0.0.0.0",
    "::1",
    "::",
    "fe80::1",
    "fc00::1",
    "fd12:3456::1",
    "fec0::1",
    "::ffff:127.0.0.1",
    "::ffff:10.0.0.1",
    "64:ff9b::a00:1",
    "2002:7f00:1::1",
    "198.18.0.1",
    "192.0.2.1",
]
NEVER = [
    "169.254.169.254",
    "fd00:ec2::254",
    "100.100.100.200",
    "::ffff:169.254.169.254",
    "224.0.0.1",
    "ff02::1",
    "255.255.255.255",
    "240.0.0.1",
]
PUBLIC = ["93.184.215.14", "8.8.8.8", "2606:4700:4700::1111", "1.1.1.1"]


@pytest.mark.parametrize("address", INTERNAL + NEVER)
def test_internal_addresses_are_refused_by_default(address: str) -> None:
    with pytest.raises(AddressRefused):
        STRICT.check_address(address)


@pytest.mark.parametrize("address", PUBLIC)
def test_public_addresses_are_allowed(address: str) -> None:
    assert str(STRICT.check_address(address)) == address


@pytest.mark.parametrize("address", INTERNAL)
def test_allow_private_opens_internal_ranges(address: str) -> None:
    PRIVATE_OK.check_address(address)


@pytest.mark.parametrize("address", NEVER)
def test_metadata_multicast_and_reserved_stay_refused_with_allow_private(address: str) -> None:
    with pytest.raises(AddressRefused):
        PRIVATE_OK.check_address(address)


def test_the_refusal_says_why_and_how_to_allow() -> None:
    with pytest.raises(AddressRefused, match=r"loopback.*http_allow_private"):
        STRICT.check_address("127.0.0.1")
    with pytest.raises(AddressRefused, match="metadata"):
        PRIVATE_OK.check_address("169.254.169.254")


@pytest.mark.parametrize("host", ["metadata.google.internal", "METADATA.google.internal.", "metadata.goog"])
def test_metadata_names_are_refused_before_any_lookup(host: str) -> None:
    with pytest.raises(AddressRefused, match="metadata"):
        PRIVATE_OK.check_host(host)
    STRICT.check_host("example.com")


def test_explicit_cidrs_are_an_exception_to_every_rule() -> None:
    policy = AddressPolicy.from_settings(ToolsSettings(http_allow_cidrs=("127.0.0.2/32", "10.1.0.0/16")))
    policy.check_address("127.0.0.2")
    policy.check_address("10.1.200.3")
    with pytest.raises(AddressRefused):
        policy.check_address("127.0.0.1")
    with pytest.raises(AddressRefused):
        policy.check_address("10.2.0.1")


def test_a_bad_cidr_names_the_setting() -> None:
    with pytest.raises(
        ConfigError, match=r"^tools\.http_allow_cidrs: '10\.0\.0\.300/8' is not an IP network"
    ):
        parse_networks(("10.0.0.300/8",))
