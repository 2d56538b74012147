"""conduit._asyncssh: fails when an asyncssh upgrade makes a private-API use stale.

Every private asyncssh member Conduit uses (conduit._asyncssh.pins) is pinned
by a hash of its source: if asyncssh changes one, the code in conduit/_asyncssh
that copies, wraps or relies on it must be reviewed against the new code (and
the hash updated); the failing case names the member. Then each run-time
change is checked to be in effect, to come off again with ``revert()``, and to
keep the wire format: what a tuned side sends, an untouched peer reads.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
from collections.abc import AsyncIterator, Iterator
from typing import Any

import asyncssh
import pytest
from asyncssh.connection import SSHConnection
from asyncssh.constants import MSG_IGNORE, MSG_KEX_LAST, MSG_KEXINIT
from asyncssh.crypto.cipher import GCMCipher

from conduit._asyncssh import kexinit, pins, tuning

# sha256 of pins.source() of each member, asyncssh 2.24.1.
SOURCE_SHA256 = {
    "ChachaCipher.__init__": "b9689bf565276ccb0f9ffc1f7904b19298e275a21e670549848b0ea4f24cbe37",
    "ChachaCipher.decrypt_header": "44feda66527a87d0d0625494183bd8c00428a4f253721a58f847ce0c3d41801c",  # noqa: E501
    "ChachaCipher.encrypt_and_sign": "f9b87e5614981c32190223455e784f7bed0f87d8a1461e9723df0c5719f26f47",  # noqa: E501
    "ChachaCipher.verify_and_decrypt": "0ab7b7420976f2f68e01144c30453a0a6c1a11ce04d35f54d30ddb53e41c9e21",  # noqa: E501
    "ChachaEncryption.__init__": "8166e7b4121098f6053b757247a417be5576cffb286423aebc83bf333034f677",
    "ChachaEncryption.decrypt_header": "a379b497e3d8617bdb87b0b17f2f485f3eb87f069cb4a279e5f351902b340a82",  # noqa: E501
    "ChachaEncryption.decrypt_packet": "6b65743ce728dfd4d3d6f00033c83a618d65a25641a4c712e668edd64efcab9b",  # noqa: E501
    "ChachaEncryption.encrypt_packet": "e9faafa35d664508ace1c9415164202f36e64da236f6fbd9defe10fb62830e24",  # noqa: E501
    "ChachaEncryption.get_mac_params": "27530c5451da2e6badbd48b10e8d69829461c3322ddcb629ab4be26530612d15",  # noqa: E501
    "chacha.chacha20": "8fd99dfce8c7c8855af6f9d1949c2758d47756685d918aad4d0e970eaffa49ce",
    "chacha.poly1305": "960a0124ac4308c095d91735ba9deeadcda9819ec0c34c847ff0a9d7ed02045b",
    "chacha.poly1305_key": "c8627dfb53b0c7025dd827884274fcafd832387b0fd0fdcebbdf83897b78ad43",
    "chacha.poly1305_verify": "8e008d95b7abc64fe518f9609f69e04c586b80afe09d7dbce4a69768400f9ded",
    "GCMCipher.__init__": "8dbe9e768f4ecf7a4bac1641c2e574c2914e72c8c06d47eeb81f1355bc44c6a3",
    "GCMCipher._update_iv": "bce250a8d9dc82b6aa456657118d8773477e693b34cdb7f5d34da34e76ccba6d",
    "GCMCipher.encrypt_and_sign": "adb87dbdb4f9039ab1f0029bd845b032bd6571d2ae894c7b067ea1f62bb0726e",  # noqa: E501
    "GCMCipher.verify_and_decrypt": "c09eb5b36d0f6a92a6df6430e70d479dbd6354f3403b98b65e9dc9ecccc37b52",  # noqa: E501
    "GCMEncryption.__init__": "96f0b31f70afef1a80e5427b9a56477f9e48226b2bc2f840e8970a6744d6f38f",
    "GCMEncryption.decrypt_header": "50d9112c6d6c1ced2db1cea7cde9f43b079ff0c6ae2b5c2213646c3db51bb293",  # noqa: E501
    "GCMEncryption.decrypt_packet": "6feb840baa1102a45480a86f2bba0c24c1cb17d2baef0baefcb6b6bad7217ecb",  # noqa: E501
    "Record.__init__": "4a4e55b9b9937676510e1f7649f51fabc7b26d073b20b605ebd16cb398095b0d",
    "_RecordMeta.__new__": "45371bc47269822883f9557939c2a759eb7070db9828a8302da878b795563ea8",
    "SFTPAttrs.decode": "876251f6bf71e1a456fb74e99b5a0d7fb46dc24022279cd4a3db7fe6df4b46d4",
    "SFTPClient.__init__": "52af55f917c173b51392717ef2064cf0d9a614518d408346ac418d07096dfadf",
    "SFTPClientHandler._make_request": "89d230f05bd86d7628a8485305744da4a00953fe00d521a6eb500401e888539a",  # noqa: E501
    "SFTPClientHandler._return_types": "49b145406c237dc981f73e0633feaa1e85eeda1551cd477674c3daff2494257c",  # noqa: E501
    "SFTPHandler.__init__": "f4067a8a90addc41f935ec8f67c3bf0a2f9a75240ef1c35c5c1309cd4940be31",
    "SFTPHandler._return_types": "49b145406c237dc981f73e0633feaa1e85eeda1551cd477674c3daff2494257c",
    "SFTPHandler.logger": "24841e0ae08f17a495194761aa77293405a92345167414adcbbb2d14dd40a5a1",
    "SFTPHandler.recv_packet": "d811faaea31cc51cc19250912d423bdcefe78cc211a7a7ca20f1bc6dc8209ad3",
    "SFTPHandler.send_packet": "0c22ab5cc5f282e978663b58f0a1ce6405b95b8cd12479d3df54df0e90f5e326",
    "SFTPServerHandler.__init__": "c6d824a26f61232e8ffe78546deb2d9910298b4221a8f979ada55692ba231128",  # noqa: E501
    "SFTPServerHandler._cleanup": "620706aba4753e8200ede56f460674a3b168539ff3944e8807a8e5d2df14baae",  # noqa: E501
    "SFTPServerHandler._extensions": "83fb7e3e2fac7c8d85d630d246881a14f83a6226ef99ee9fbb23f287e076e578",  # noqa: E501
    "SFTPServerHandler._process_fsetstat": "2a53c2542dcfdf0aba2d95d7a2b83567eacc9398e3f9dcbedbc1a73cbea2df0d",  # noqa: E501
    "SFTPServerHandler._get_next_handle": "0ca44c9cb2fe52b1de195f922f3ae5e92ac6dc39149ab4e030053f1a29810e36",  # noqa: E501
    "SFTPServerHandler._packet_handlers": "8751075af77a5af68fd605e38292dbd5b8bac4006d621de323bea3a8274466f7",  # noqa: E501
    "SFTPServerHandler._process_close": "51ec1a5405ff2e30a2e98f1db90b7437e8a9b49c579c33de126c64f758ed0a00",  # noqa: E501
    "SFTPServerHandler._process_limits": "62a6a3cb0ec8ec7ce6dc44f301d60b240cac251c2168d82cef3a985350f1b12d",  # noqa: E501
    "SFTPServerHandler._process_open": "de593bd0384f9f49fba082173a550dfbea413851fb919609e3a338a5e14a47ac",  # noqa: E501
    "SFTPServerHandler._process_opendir": "edbe8f8a79909dda00f6b6a46c5e1a3389ed4f737da921b1c0f77ba2c9fd0fda",  # noqa: E501
    "SFTPServerHandler._process_packet": "4e7c6b60e5c9dd265a293c13b5262b519018d4994f09645a431540508d04d60b",  # noqa: E501
    "SFTPServerHandler._process_read": "bb3d2d0ec3f55fede0abe3b36f2062a7dc0b7552b35aaa2f227c90e4fa2a159e",  # noqa: E501
    "SFTPServerHandler._process_readdir": "c062f26f6487cd47f2b3e20ee0763d52174b93ce972b688b64eaef3c4e9c956a",  # noqa: E501
    "SFTPServerHandler._process_write": "8057f08f13ae0d0642a7b4fbf9f448ae31db982f5d1ddca9423848f81e8296f8",  # noqa: E501
    "SSHChannel.__init__": "c9834d9302839e7129e814f1276ecc262bd424f0f1c22ccb3740983d181c3ae4",
    "SSHChannel._close_send": "5dcbc60194d9a29b69cd8e767f5ac5e53b95b1a59996bb893351599f2acd8942",
    "SSHChannel._flush_send_buf": "3f11e9dc27c58b18847c12007b945cb36c7767def131c9b96b0c0a81a8b72dbc",  # noqa: E501
    "SSHChannel._pause_resume_writing": "b05e507ca9fdeec97aae06c9f21b1fa39318d127d5b876c709232571641f3aed",  # noqa: E501
    "SSHChannel.send_packet": "00e81b763c8f3dd2f3012a14cb28f5824ab653940b03f548abad871db918c0ae",
    "SSHChannel.write": "1045e200084699330b3c75abe2e63e760dc8a12eb008c85ec5cefcafab372e38",
    "SSHConnection.__init__": "41da2e469f2a39643016d7d1ae7e1b262cf1a7b68a3a9672eb80e21195b0053a",
    "SSHConnection._cancel_keepalive_timer": "d812058ddd18253cbd1ff72de7b4839c6dd8a8cc923e74505470c95cc1984e2a",  # noqa: E501
    "SSHConnection._keepalive_timer_callback": "6d8aa6656cfc6003eb94ae85b783b1248335b441d869b05ef8a893807a7b4bed",  # noqa: E501
    "SSHConnection._reset_keepalive_timer": "7a9157707c514524758ca0bfdf3608490598acd19a9b9fc10626f3236542117e",  # noqa: E501
    "SSHConnection._set_keepalive_timer": "23a054202a1cb32b532c5739de8c3bd1fd7b8c762f52dd104c267e60ffd99d7c",  # noqa: E501
    "SSHConnection.set_keepalive": "3208fb416939c4e03dd1230ca23ed8baf3bc79dc7199b78cdea663caab2d7e12",  # noqa: E501
    "SSHConnection._cleanup": "ea4cd2aed57194e571addabce7dd2136182ff7816bb0558622987a1057fc2d30",
    "SSHConnection._finish_userauth": "bd2146536318273dba76844090e3c8d6ab1556dcb87e355471ea8795457403b0",  # noqa: E501
    "SSHConnection._force_close": "264b4367525f4f864cf63d560aab5e027527a95d5225ede1dba01161010e07dc",  # noqa: E501
    "SSHConnection._packet_handlers": "73f32c0879872e6fc443ee3cb791a807cdcb221dde0b078c19053593e149da3f",  # noqa: E501
    "SSHConnection._process_kexinit": "439bdf2fc55e67370a3e0c1c5e1276fc2c7e95a5fcfb5979914bac461f072666",  # noqa: E501
    "SSHConnection._process_newkeys": "a0331fe3cfd09d0b414800a9c59ffef089fa0ee67883957f597d3ccda58160b3",  # noqa: E501
    "SSHConnection._process_userauth_request": "9d1a0e42d15a1526776e69718c7e08f4fa967e4ef227e2fbb78378473effd474",  # noqa: E501
    "SSHConnection._recv_data": "fc4e0735191bb0fdd7fa8f91761067015989bfa47246ac1843c9abaeef7d243f",
    "SSHConnection._recv_packet": "b3daa22e9763eee9f3ec710d1469c1b54c8df5066bae3e65b66bdf1db8063c8b",  # noqa: E501
    "SSHConnection._recv_pkthdr": "7adc4d88fe20593cef39c00322547733a2d81f0aed40924e6105d5f57aa2a820",  # noqa: E501
    "SSHConnection._finish_recv_packet": "e12d96db58b3524e90032440bfd6f2705a53a3b74caaa121e14b7d164ad2e6de",  # noqa: E501
    "SSHPacketHandler.process_packet": "490a59d971d0ce03dbdc81e9e9a582830041e9a69f3af76dd4323886e493f4ae",  # noqa: E501
    "SSHChannel._packet_handlers": "a5e75ccfd600e5857d3c20112f6ca3fa9542f98d1e3fc3d1214e060b48ebd378",  # noqa: E501
    "SSHChannel._process_data": "342490795c4b893cbff8868df9c32b79230f0fd881b7fa435afd267e3ce22586",
    "SSHChannel._process_window_adjust": "7a2e4c4998e0b496a3006855fb24693092ee4950dce3bc0969ca42092913dff2",  # noqa: E501
    "SSHChannel._accept_data": "33121e9e185c98506d75d35b326b5e849ac6e76a92af56299be96e5cb5017ede",
    "SSHChannel._deliver_data": "bd94ccbaa59ab51048f695e4830ba02d0bb9af4cc44dfeb19a63a7afde35e74b",
    "SSHConnection._send": "c6698a37eb80f574e53595c650f493b6ef52576a411dabc1b2977ba2e3e7b5b3",
    "SSHConnection._send_disconnect": "225d909cfce74f89b5a3f7756198729c35163f079ad4ec8fed54162353bfd7fc",  # noqa: E501
    "SSHConnection._send_deferred_packets": "c5ef8240853eb331be28da0b38f68354ea5f7168d63f06550e94d5b297aca75f",  # noqa: E501
    "SSHConnection._send_kexinit": "275ddc818b59f44b24a3b9d0ccc8cdd1d283a449f75c5d36e5a57cb70d9d90e3",  # noqa: E501
    "SSHConnection.data_received": "b2d14a83b2604db65c8775264dfbe38e5920ba749ec627134ddbe708cb43974a",  # noqa: E501
    "SSHConnection.disconnect": "3d29c54a26ec5242b259e6a5ee7464a4f6b7194ab544d70de2af97588c927fcb",
    "SSHConnection.send_newkeys": "0b41234420373618bb7bae4fd482422dd71740c756c6d2103f02e265c39794a7",  # noqa: E501
    "SSHConnection.send_packet": "fb9da7bec6dd395a2f379f8a0f4dbfc5f194ff80e1ed8630d9a6dbf291359406",
    "SSHConnection.send_userauth_failure": "30f1eb63d0cb74c9197c86e7bcd8d923ece10d84ad2a89a993483f7010025126",  # noqa: E501
    "SSHConnection.send_userauth_success": "812e749ee2432e4b667cf83a1d7fa6b25a2ad79da298d05fa36c8e69d6002fb8",  # noqa: E501
    "SSHLogger.log": "508a0a50623f9179a151a2c06c5ba562ae19e97d3372b1ba46e964dead193631",
    "SSHPacketLogger.log_sent_packet": "d21306e3c6b2b2f50005e2a2b5bdab0475a82f02c14507fd25425a967c7eda80",  # noqa: E501
    "SSHPacketLogger._log_packet": "f3263d7da93663f1a3825d53a0ef71122da1168957e28d0b84dc20a3bba0c45c",  # noqa: E501
    "SSHReader.__init__": "352cd93599e317b2f1556bd23c30cffd703f9228a9c379d177853711e2246867",
    "SSHServerConnection._validate_client_public_key": "6a630986a379808403b67a83cf8d9720b596c12f69a11c63437e17004bcf2bff",  # noqa: E501
    "SSHServerConnection.kbdint_auth_supported": "7e661408a3fb50f2bedc1850df1fe5e4f653335ad3a1c808b89a70c6f4befaf3",  # noqa: E501
    "SSHServerConnection.public_key_auth_supported": "15574dcfbd63ad3cd5f2384dbb7ae4ef1dc20333fa8d9809497b04e8662786e2",  # noqa: E501
    "SSHServerConnection.validate_public_key": "eb5e224339282892cd579de8cad03ac72612f9a82dc67ff2401d67e5e32e792f",  # noqa: E501
    "SSHServerStreamSession._init_sftp_server": "f1ed39d6ce159b2e2bed4d1a17835cc0586c7a00846a7e6d540c426b899c3aed",  # noqa: E501
    "SSHStreamSession.__init__": "a7102adfac6977033939d2f93985787c529933026c1ecfae584fc434b538f8ac",
    "SSHStreamSession._block_read": "1430e3d5f3b1a376cd9c7e26cd83299f879cfb0329e294e92966d40f56d7c0d8",  # noqa: E501
    "SSHStreamSession._maybe_resume_reading": "eb4ce0e4ccc96fb5b9d2e5f1bf29f4945596e13e5bba351d2a28f1b726679cd6",  # noqa: E501
    "SSHStreamSession._unblock_read": "77be3cbcbaff6d20af5c5a1b0f5c4af8812388df3631d3cc624a23a600629672",  # noqa: E501
    "SSHStreamSession.connection_lost": "c015e4ebb89ef4016eb3c34c0b3d38893a72fca005bf7d364b8ada222ea45ef2",  # noqa: E501
    "SSHStreamSession.connection_made": "4fa7ec0d65048081d7d657b8d087ac0aaed0e9a4b1b26abe63189503aa5b329e",  # noqa: E501
    "SSHStreamSession.data_received": "7a6181d076246336982b2f37842a7ac84e7989ef4e9e9834b9e5286bbce3883c",  # noqa: E501
    "SSHStreamSession.read": "595142239a785afb2bb63313aacd6903ec11896ba6167b4869b2b8bd457d5e0c",
    "SSHWriter.__init__": "352cd93599e317b2f1556bd23c30cffd703f9228a9c379d177853711e2246867",
    "ServerAuth.__init__": "ff793e0163031a9d9f3b764ee66412581b14b3c4dd053744d9a694dc7d1160f6",
    "ServerAuth.send_success": "a425bc98b9ecc35e58684c994e5a177ae21e8ba44557fbf06551f6865c57fb2e",
    "_ServerKbdIntAuth._send_challenge": "09fcc821acb2a403897726b36d5814fe228ef63cc5a58e3562200fbcabc2f1e5",  # noqa: E501
    "_ServerPublicKeyAuth._start": "f736fe6663fc3aecd04c6cdfa37d976e0157e70ff243ba28f5f6ad73c80ea82e",  # noqa: E501
    "get_supported_server_auth_methods": "8484ed020351243af10f8b254e05135cc172399c488a9ef728a12369a5c34308",  # noqa: E501
}


def _digest(member: object) -> str:
    return hashlib.sha256(pins.source(member).encode()).hexdigest()


@pytest.fixture
def tuned() -> Iterator[None]:
    tuning.apply()
    yield


def test_pinned_version() -> None:
    assert asyncssh.__version__ == tuning.PINNED


@pytest.mark.parametrize("name", sorted(SOURCE_SHA256))
def test_original_unchanged(name: str) -> None:
    # A failure here means asyncssh changed code conduit/_asyncssh copies,
    # wraps or relies on: re-read the new original, port the change (or drop
    # it), update the hash (see tuning._send_packet's docstring).
    assert _digest(pins.MEMBERS[name]) == SOURCE_SHA256[name], name


def test_every_member_pinned() -> None:
    assert set(tuning.PATCHES) <= set(tuning.ORIGINALS)
    assert set(pins.MEMBERS) == set(SOURCE_SHA256)


def test_source_of_a_table_follows_its_entries() -> None:
    table = {1: test_pinned_version, b"x": _digest}
    assert pins.source(table) == pins.source(dict(reversed(table.items())))
    assert pins.source(table) != pins.source({**table, 2: test_pinned_version})
    assert pins.source(table) != pins.source({**table, 1: _digest})


@pytest.mark.parametrize("name", sorted(tuning.PATCHES))
def test_patch_in_effect(tuned: None, name: str) -> None:
    owner, attr, replacement = tuning.PATCHES[name]
    assert owner.__dict__[attr] is replacement
    assert owner.__dict__[attr] is not tuning.ORIGINALS[name]


def test_kexinit_dispatch_in_effect(tuned: None) -> None:
    # asyncssh dispatches packets through a table holding the function itself.
    assert SSHConnection._packet_handlers[MSG_KEXINIT] is kexinit.process_kexinit


def test_revert_restores_originals() -> None:
    def in_effect() -> list[bool]:
        patched = [
            owner.__dict__[attr] is replacement
            for owner, attr, replacement in tuning.PATCHES.values()
        ]
        return [*patched, SSHConnection._packet_handlers[MSG_KEXINIT] is kexinit.process_kexinit]

    tuning.apply()
    assert all(in_effect())
    try:
        tuning.revert()
        assert not any(in_effect())
        for name, (owner, attr, _) in tuning.PATCHES.items():
            assert owner.__dict__[attr] is tuning.ORIGINALS[name], name
        assert SSHConnection._packet_handlers == kexinit.HANDLERS
        tuning.revert()  # idempotent
        assert SSHConnection._packet_handlers[MSG_KEXINIT] is kexinit.ORIGINAL
    finally:
        tuning.apply()  # the rest of the session runs tuned, as the gateway does
    assert all(in_effect())


def test_apply_refuses_other_versions(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(asyncssh, "__version__", "9.9.9")
    with pytest.raises(RuntimeError, match=r"2\.24\.1"):
        tuning.apply()


def test_gcm_output_identical_to_original(tuned: None) -> None:
    key, iv = os.urandom(16), os.urandom(12)
    ours, theirs, ours_in, theirs_in = (GCMCipher("aes128-gcm", key, iv) for _ in range(4))
    header, data = b"\0\0\1\0", os.urandom(256)
    for _ in range(3):  # the IVs advance identically
        sealed = ours.encrypt_and_sign(header, data)
        assert sealed == tuning.ORIGINALS["GCMCipher.encrypt_and_sign"](theirs, header, data)
        body, mac = sealed[0][4:], sealed[1]
        assert ours_in.verify_and_decrypt(header, body, mac) == data
        original = tuning.ORIGINALS["GCMCipher.verify_and_decrypt"]
        assert original(theirs_in, header, body, mac) == data
    assert ours_in.verify_and_decrypt(header, body, bytes(16)) is None


def test_log_formatting_skipped_unless_packet_logging(
    tuned: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[str] = []

    class Logged(asyncssh.packet.SSHPacketLogger):
        @property
        def logger(self) -> asyncssh.logging.SSHLogger:
            calls.append("formatted")
            return asyncssh.logging.logger

    Logged().log_sent_packet(94, 1, b"x")
    assert calls == []
    monkeypatch.setattr(asyncssh.logging.SSHLogger, "_debug_level", 3)
    Logged().log_sent_packet(94, 1, b"x")
    assert calls == ["formatted"]


def test_log_arguments_formatted_only_when_logged(
    tuned: None, caplog: pytest.LogCaptureFixture
) -> None:
    formatted: list[str] = []

    class Attrs:
        def __str__(self) -> str:
            formatted.append("attrs")
            return "size 1"

    log = asyncssh.logging.logger.get_child("sftp", context="conn=0, chan=0")
    with caplog.at_level(logging.INFO, logger="asyncssh"):
        log.debug1("Received open request for %s, %s", b"/a\xff", Attrs())
    assert formatted == [] and not caplog.records
    with caplog.at_level(logging.DEBUG, logger="asyncssh"):
        log.debug1("Received open request for %s, %s", b"/a\xff", Attrs())
    assert formatted  # on: the same message as asyncssh's own
    assert caplog.records[-1].getMessage().endswith("Received open request for /a\\xff, size 1")


# -- end to end: an asyncssh server and client in this process ---------------------------


async def _echo(process: asyncssh.SSHServerProcess[bytes]) -> None:
    while data := await process.stdin.read(255 * 1024):
        process.stdout.write(data)
        await process.stdout.drain()
    process.exit(0)


@contextlib.asynccontextmanager
async def echo_server(**options: Any) -> AsyncIterator[tuple[int, asyncssh.SSHKey]]:
    """An asyncssh echo server on a free loopback port (``options``: the
    server's, e.g. algorithms): its port and a client key it accepts."""
    host_key = asyncssh.generate_private_key("ssh-ed25519")
    client_key = asyncssh.generate_private_key("ssh-ed25519")
    server = await asyncssh.listen(
        "127.0.0.1",
        0,
        server_host_keys=[host_key],
        process_factory=_echo,
        authorized_client_keys=asyncssh.import_authorized_keys(
            client_key.export_public_key().decode()
        ),
        encoding=None,
        **options,
    )
    try:
        yield server.sockets[0].getsockname()[1], client_key
    finally:
        server.close()
        await server.wait_closed()


async def echo_over_ssh(payload: bytes, both: dict[str, Any], **run: Any) -> bytes:
    """``payload`` through an asyncssh echo server and back over loopback;
    ``both``: options for server and client alike (algorithms, rekey_bytes),
    ``run``: the client's ``run()`` options (window, max_pktsize)."""
    async with echo_server(**both) as (port, client_key):
        async with asyncssh.connect(
            "127.0.0.1", port, known_hosts=None, client_keys=[client_key], username="u", **both
        ) as conn:
            result = await conn.run(input=payload, encoding=None, **run)
    assert isinstance(result.stdout, bytes)
    return result.stdout


async def _round_trip(cipher: str, mac: str, payload: bytes) -> tuple[bytes, list[int]]:
    sent: list[int] = []
    tuned_send = asyncssh.connection.SSHConnection.send_packet

    def spy(
        self: asyncssh.connection.SSHConnection, pkttype: int, *args: bytes, **kw: object
    ) -> None:
        if self.is_server():
            sent.append(pkttype)
        tuned_send(self, pkttype, *args, **kw)  # type: ignore[arg-type]

    asyncssh.connection.SSHConnection.send_packet = spy  # type: ignore[method-assign]
    try:
        algorithms = {"encryption_algs": [cipher], "mac_algs": [mac], "compression_algs": ["none"]}
        echoed = await echo_over_ssh(payload, algorithms)
    finally:
        asyncssh.connection.SSHConnection.send_packet = tuned_send  # type: ignore[method-assign]
    return echoed, sent


@pytest.mark.parametrize(
    ("cipher", "mac", "ignores"),
    [
        ("aes128-gcm@openssh.com", "hmac-sha2-256", False),
        ("aes256-gcm@openssh.com", "hmac-sha2-256", False),
        ("chacha20-poly1305@openssh.com", "hmac-sha2-256", False),
        ("aes128-ctr", "hmac-sha2-256-etm@openssh.com", True),
        ("aes128-ctr", "hmac-sha2-256", True),
    ],
)
async def test_wire_round_trip(tuned: None, cipher: str, mac: str, ignores: bool) -> None:
    payload = os.urandom(3 * 1024 * 1024 + 17)
    echoed, sent = await asyncio.wait_for(_round_trip(cipher, mac, payload), 60)
    assert echoed == payload
    after_kex = [t for t in sent if t > MSG_KEX_LAST]
    assert after_kex, "no connection-layer packets seen"
    # MSG_IGNORE before connection-layer packets only where it defends something.
    assert (MSG_IGNORE in sent) is ignores
