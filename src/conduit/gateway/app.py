"""The running gateway: host keys, backends, the listener, reload and shutdown."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import sqlite3
import threading
from collections.abc import Coroutine
from ipaddress import ip_address
from pathlib import Path
from typing import Any

import asyncssh

from conduit._asyncssh import tuning
from conduit.audit import Auditor
from conduit.audit.events import EventType
from conduit.audit.noise import NoiseLog
from conduit.auth.identity import Identity
from conduit.auth.secrets import SecretStore
from conduit.auth.totp import Verifier
from conduit.config import Config, ConfigError
from conduit.config.crypto import effective
from conduit.errors import ListenError
from conduit.gateway.context import Recorder
from conduit.gateway.control import ControlServer, open_control
from conduit.gateway.defending import Defence
from conduit.gateway.devicewatch import DeviceWatch
from conduit.gateway.eventlog import EventLog
from conduit.gateway.gate import Listener, Ticket
from conduit.gateway.hostkey import host_keypairs, load_host_certificates, load_host_key
from conduit.gateway.quarantine import Keeper
from conduit.gateway.reloading import ReloadResult, reload_policy
from conduit.gateway.resources import raise_nofile
from conduit.gateway.server import Connection, Counters
from conduit.gateway.settle import storage_settler
from conduit.gateway.sweep import sweep_in_background
from conduit.inspect.plan import Inspector
from conduit.inspect.quarantine import Checks, Quarantine
from conduit.policy import Policy
from conduit.site.build import build, identity
from conduit.state import STATE_FILE, StateDB
from conduit.storage.base import Backend
from conduit.storage.local import LocalBackend

log = logging.getLogger("conduit.gateway")


class Gateway:
    """Conduit's SSH gateway for one policy: the site its sessions consult and
    the :class:`~conduit.gateway.host.ConnectionHost` of its connections."""

    def __init__(
        self, config: Config, *, recorder: Recorder | None = None, checks: Checks | None = None
    ) -> None:
        self.config = config
        self._own_checks = checks is None
        #: the inspection checks (built from the policy unless a test brings its
        #: own); what they and the quarantine enforce, the policy allows
        self.checks: Checks = checks or Inspector(config)
        self._policy = Policy(config, enforceable=self.checks.enforceable)
        self.keeper: Keeper | None = None
        self._identity = identity(config)
        # Without a recorder given (tests give one), start() opens the journal.
        self._journal: EventLog | None = None
        self._recorder = recorder
        self.counters = Counters()
        self.gate = Listener(self._admit, self.counters.admission.leave)
        limits = config.gateway.limits
        self._set_resource_limits(config)
        self.noise = NoiseLog(
            lambda *args, **fields: self.recorder.record(*args, **fields),
            config.audit.journal,
            interval=limits.auth_failure_summary_interval,
            min_free=int(limits.journal_min_free),
            spawn=self.spawn,
        )
        self.defence = Defence(
            lambda *args, **fields: self.recorder.record(*args, **fields),
            self.noise.refused,
            self.spawn,
        )
        self.areas: dict[str, Backend] = {}
        self.devices: dict[str, Backend] = {}
        self.device_watch = DeviceWatch(self)
        self._server: asyncssh.SSHAcceptor | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self.host_keys: list[asyncssh.SSHKey] = []
        self.host_certificates: list[asyncssh.SSHCertificate] = []
        self._stopping = threading.Event()
        #: Authenticated connections (what a reload may revoke).
        self.connections: set[Connection] = set()
        self._reloading = asyncio.Lock()
        self.control: ControlServer | None = None
        self._totp: Verifier | None = None

    # -- what sessions see ---------------------------------------------------------------

    @property
    def recorder(self) -> Recorder:
        """Where events go: the recorder given, or the journal :meth:`start` opened."""
        if self._recorder is None:
            raise RuntimeError("no audit journal before the gateway starts")
        return self._recorder

    @property
    def policy(self) -> Policy:
        return self._policy

    def _admit(self, ticket: Ticket, peer: Any) -> bool:
        """Admission at accept time (see gate.py and admission.py)."""
        try:
            address = ip_address(str(peer[0]).split("%")[0])
        except (TypeError, IndexError, ValueError):
            return False  # no address to judge it by: refuse
        if self.defence.refuse(address):
            return False  # banned: closed before asyncssh sees it
        limits = self.config.gateway.limits
        short = self.counters.descriptors.short()
        if short is not None:
            # Refused before asyncssh spends a descriptor or a timer on it: the
            # journal, its sinks and the sessions already open keep theirs.
            self.noise.refused(str(address), short)
            return False

        def dropped(source: str, reason: str) -> None:
            self.noise.refused(source, reason)
            self.defence.admission_refused(address, reason)

        return self.counters.admission.admit(
            ticket, address, limits.max_startups, limits.max_startups_per_source, dropped
        )

    @property
    def identity(self) -> Identity:
        return self._identity

    def totp(self) -> Verifier:
        """TOTP secrets and replay marks (``data_dir/state.sqlite``), opened on first use."""
        if self._totp is None:
            self._totp = Verifier(SecretStore.open(Path(self.config.gateway.data_dir)))
        return self._totp

    def keys_of(self, user: str) -> frozenset[bytes]:
        """The keys (blobs) that may sign ``user``'s decisions now: listed in
        the policy, not revoked, not expired (see ``Identity.signers_of``)."""
        return self._identity.signers_of(user)

    def auditor_available(self) -> bool:
        return bool(getattr(self._recorder, "available", True))

    def spawn(self, coro: Coroutine[Any, Any, Any]) -> None:
        """Run ``coro`` in the background, keeping a reference until it ends."""
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._finished)

    def _finished(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            # Background records (session.end, auth.failure) cannot refuse
            # anything any more; say so loudly rather than lose it silently.
            log.error("background event failed: %s", task.exception())

    # -- lifecycle -------------------------------------------------------------------------

    @property
    def port(self) -> int:
        assert self._server is not None
        return int(self._server.sockets[0].getsockname()[1])

    @property
    def fingerprint(self) -> str:
        return self.host_keys[0].get_fingerprint("sha256")

    def _build_backends(self, config: Config) -> dict[str, Backend]:
        areas: dict[str, Backend] = {}
        for name, area in config.areas.items():
            current = self.config.areas.get(name)
            same = (
                current is not None
                and current.path == area.path
                and (self.config.gateway.durable_uploads == config.gateway.durable_uploads)
            )
            if name in self.areas and same:
                # Unchanged by a reload: keep the backend (and its open uploads).
                areas[name] = self.areas[name]
                continue
            # Its crash leftovers are swept by _sweep_later, once the listener is up.
            areas[name] = LocalBackend(name, area.path, durable=config.gateway.durable_uploads)
        return areas

    def _sweep_later(self, before: dict[str, Backend]) -> None:
        """Sweep the temp files a crash left in each new area (sweep.py)."""
        new = [
            (name, backend)
            for name, backend in self.areas.items()
            if isinstance(backend, LocalBackend) and before.get(name) is not backend
        ]
        if new:
            sweep_in_background(new, self.recorder, self._stopping)

    def _build_devices(self, config: Config) -> dict[str, Backend]:
        from conduit.storage.relay import open_device

        state = config.gateway.data_dir / "relay"
        if config.devices:
            state.mkdir(parents=True, exist_ok=True, mode=0o700)
        devices: dict[str, Backend] = {}
        for name, device in config.devices.items():
            if name in self.devices and self.config.devices.get(name) == device:
                devices[name] = self.devices[name]  # unchanged: keep its connection
            else:
                devices[name] = open_device(
                    name,
                    device,
                    state,
                    on_failure=self.device_watch,
                    on_connect=self._device_connected,
                )
        return devices

    def _device_connected(self, link: Any) -> None:
        """Journal each connection to a device with the algorithms it agreed on."""
        fields = {"device": link.name, "address": link.device.address, **link.algorithms}
        self.spawn(self.recorder.record(EventType.DEVICE_CONNECT, "success", **fields))

    def _set_resource_limits(self, config: Config) -> None:
        limits = config.gateway.limits
        self.counters.reorder.limit = int(limits.max_reorder_total)
        self.counters.descriptors.reserve = limits.fd_reserve

    async def start(self) -> None:
        tuning.apply()
        raise_nofile()
        gw = self.config.gateway
        gw.data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.host_keys = load_host_key(self.config)
        self.host_certificates = load_host_certificates(self.config)
        try:  # before the journal opens: a refused start leaves nothing running
            self.state = StateDB.open(gw.data_dir)
        except sqlite3.Error as exc:  # as an OSError: `serve` says it in one line
            path = gw.data_dir / STATE_FILE
            raise OSError(f"the gateway's state {path} is unusable ({exc})") from None
        if self._recorder is None:
            auditor = await Auditor.open(self.config.audit, node=gw.node, key_dir=gw.data_dir)
            self._journal = EventLog(auditor)
            self._recorder = self._journal
        self.keeper = Keeper(
            self, Quarantine(gw.data_dir, self.state, self.config.inspect, self.checks)
        )
        try:
            self.noise.start()
            await self._settle_crash()
            await self.defence.open(self.config)  # last run's bans, before anyone connects
            await self._listen()
            self._sweep_later({})
            self.keeper.start()
        except BaseException as exc:
            # Nothing is served: seal the journal and stop its sinks, or their
            # tasks outlive the failed start (and a second start finds it busy).
            with contextlib.suppress(Exception):
                await self.noise.close()
            with contextlib.suppress(Exception):
                await self.defence.close()
            if self._journal is not None:
                with contextlib.suppress(Exception):
                    await self.recorder.record(EventType.GATEWAY_START, "failed", error=str(exc))
                await self._journal.auditor.close()
            raise
        (gw.data_dir / "gateway.pid").write_text(f"{os.getpid()}\n")
        host = gw.listen.rpartition(":")[0]
        await self.recorder.record(EventType.GATEWAY_START, "success", listen=f"{host}:{self.port}")

    async def _settle_crash(self) -> None:
        """Before anyone connects: settle the write-ahead intents a crash left
        without outcome against the storage (see conduit.audit.recovery)."""
        if self._journal is None:
            return
        self.areas = self._build_backends(self.config)
        self.devices = self._build_devices(self.config)
        assert self.keeper is not None
        settle = storage_settler(lambda: self.areas, lambda: self.devices, self.keeper.kept)
        await self._journal.auditor.settle_intents(settle)

    def server_options(self) -> dict[str, Any]:
        """What asyncssh's server is allowed to do, for the single process and
        every worker alike (one place, so the two cannot drift apart)."""
        gw = self.config.gateway
        algs = effective(gw.crypto)
        return {
            "server_host_keys": host_keypairs(
                self.host_keys, algs.host_keys, self.host_certificates
            ),
            "kex_algs": list(algs.kex),
            "encryption_algs": list(algs.ciphers),
            "mac_algs": list(algs.macs),
            "compression_algs": ["none"],
            "agent_forwarding": False,
            "x11_forwarding": False,
            "allow_pty": False,
            # No shells, no ptys: asyncssh's line editor would only wrap every
            # channel and route each write and attribute lookup through it.
            "line_editor": False,
            "login_timeout": gw.limits.login_grace_time,
            "keepalive_interval": 60,
            "keepalive_count_max": 3,
            "server_version": "Conduit",
        }

    async def _listen(self) -> None:
        gw = self.config.gateway
        self.areas = self._build_backends(self.config)
        self.devices = self._build_devices(self.config)
        host, _, port = gw.listen.rpartition(":")
        try:
            self._server = await asyncssh.listen(
                host.strip("[]"),
                int(port),
                tunnel=self.gate,  # our listener: admission before asyncssh
                server_factory=lambda: Connection(self),
                **self.server_options(),
            )
        except OSError as exc:
            reason = os.strerror(exc.errno) if exc.errno else str(exc)
            raise ListenError(f"cannot listen on {gw.listen}: {reason}") from exc

    def reload(self, path: Path | None = None) -> None:
        """Swap in a new policy file; on any error keep the current one and raise."""
        self._swap(self._prepare(path))

    async def reload_off_loop(self, path: Path | None = None) -> None:
        """:meth:`reload`, with the file read and checked in a thread.

        Checking runs tools (``gpg --import`` for each OpenPGP key file, into a
        throw-away keyring and into the gateway's) and may wait for them up to
        ``verify_timeout`` each; on the event loop that would stall every
        session for as long. Only the swap runs on the loop.
        """
        self._swap(await asyncio.to_thread(self._prepare, path))

    def _prepare(self, path: Path | None) -> tuple[Config, Policy, Identity, Checks]:
        """The new file built and checked; touches nothing of the running gateway."""
        source = path or self.config.source
        if source is None:
            raise ConfigError(None, ["the embedded default cannot be reloaded"])
        site = build(source)
        config = site.config
        checks = Inspector(config) if self._own_checks else self.checks
        return config, Policy(config, enforceable=checks.enforceable), site.identity, checks

    def _swap(self, prepared: tuple[Config, Policy, Identity, Checks]) -> None:
        config, policy, keys, checks = prepared
        areas = self._build_backends(config)
        try:
            devices = self._build_devices(config)
        except BaseException:
            for name, backend in areas.items():
                if self.areas.get(name) is not backend:
                    self.spawn(backend.close())  # built for nothing: give its folder back
            raise
        self.config, self._policy, self._identity, self.checks = config, policy, keys, checks
        if self.keeper is not None:  # grace, expiry, evidence size and checks of the new file
            self.keeper.quarantine.config = config.inspect
            self.keeper.quarantine.checks = checks
        before, self.areas, self.devices = self.areas, areas, devices
        self.noise.interval = config.gateway.limits.auth_failure_summary_interval
        self.noise.min_free = int(config.gateway.limits.journal_min_free)
        self._set_resource_limits(config)
        self._sweep_later(before)

    async def reload_policy(self, *, via: str = "api") -> ReloadResult:
        """Reload, revoke what the new policy no longer allows, journal it;
        one at a time. Never raises for a bad file (see reloading.py)."""
        async with self._reloading:
            result = await reload_policy(self, via=via)
            if result.applied:
                await self.defence.reconfigure(self.config)
            return result

    def install_reload_signal(self) -> None:
        """SIGHUP reloads (its outcome goes to the journal and the console)."""
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGHUP, lambda: self.spawn(self.reload_policy(via="signal")))

    async def start_control(self) -> None:
        """The control socket ``conduit reload`` asks (see control.py)."""
        self.control = await open_control(self)

    async def stop(self) -> None:
        self._stopping.set()
        self.defence.stopping = True  # connections it closes are not their sources' fault
        if self.keeper is not None:
            await self.keeper.stop()
        if self.control is not None:
            await self.control.close()
            self.control = None
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None
        await self.defence.close()
        try:
            await self.noise.close()
        except Exception as exc:  # the journal may be what is failing
            log.error("could not record failed-login summaries: %s", exc)
        try:
            await self.recorder.record(EventType.GATEWAY_STOP, "success")
        except Exception as exc:  # the journal may be what is failing
            log.error("could not record gateway.stop: %s", exc)
        for task in list(self._tasks):
            task.cancel()
        if self._journal is not None:
            await self._journal.auditor.close()
        if self._totp is not None:
            self._totp.store.close()
            self._totp = None
        pid = self.config.gateway.data_dir / "gateway.pid"
        pid.unlink(missing_ok=True)
        for backend in list(self.areas.values()) + list(self.devices.values()):
            await backend.close()
        if self.keeper is not None:
            self.state.close()
