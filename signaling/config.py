"""Configuration: defaults < TOML file < ``JR_*`` environment < command-line flags.

Every setting is one flat field. In the TOML file a setting may be written flat
(``redis_url = ...``) or inside a table whose name is its prefix (``[jwt] secret = ...``
is ``jwt_secret``). The environment variable of a field is ``JR_`` + its name in upper
case; list values in the environment are JSON.
"""

from __future__ import annotations

import ipaddress
import json
import os
import secrets
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from .config_governance import GovernanceSettings
from .config_seal import SealSettings
from .config_webhooks import WebhookSettings


class ConfigError(Exception):
    """A setting is wrong; the message names the setting and where it came from."""


VideoCodec = Literal["VP8", "H264"]
VIDEO_CODECS: tuple[VideoCodec, ...] = ("VP8", "H264")


class IceServer(BaseModel):
    model_config = ConfigDict(extra="forbid")
    urls: list[str]
    username: str | None = None
    credential: str | None = None


# Settings kept in modules of their own: the seal's (config_seal.py), records
# governance's (config_governance.py), the webhooks' (config_webhooks.py).
class Config(SealSettings, GovernanceSettings, WebhookSettings):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    host: str = "127.0.0.1"
    port: int = Field(8480, ge=0, le=65535)
    # Base of the links handed out (join links, applicant links); derived from host:port
    # when empty.
    public_url: str = ""
    data_dir: Path = Path("jointreview-data")
    # Empty: in-memory state journaled to data_dir (single node). Set: Redis (many nodes).
    redis_url: str = ""
    # Redis connections of this node (signaling/state/redis_connect.py): at most this many
    # commands at once, whatever the number of sockets; a call waiting longer than
    # redis_pool_timeout_s for a free connection answers 503 store_unavailable.
    redis_pool_size: int = Field(32, ge=2, le=1024)
    redis_pool_timeout_s: float = Field(5.0, gt=0, le=60)
    # A Redis that does not answer within this is an outage for that call (503).
    redis_timeout_s: float = Field(5.0, gt=0, le=60)
    # >0: a filed write (case events, new documents) is acknowledged only once this many
    # replicas have it (WAIT, at most redis_wait_ms): it survives a Sentinel failover.
    redis_wait_replicas: int = Field(0, ge=0, le=16)
    redis_wait_ms: int = Field(1000, ge=1, le=60_000)
    # The record (signaling/history): empty, SQLite at <data_dir>/history.sqlite3 (one
    # node); postgresql+asyncpg://... when several nodes share the service.
    database_url: str = ""
    node_id: str = ""
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    # uvloop wakes up for a packet at a fraction of asyncio's own loop's cost, and a media
    # node wakes up for nearly every packet; asyncio's loop remains for debugging.
    event_loop: Literal["uvloop", "asyncio"] = "uvloop"

    # Identity. HS256 with a shared secret (generated into data_dir when empty), or
    # RS256/ES256 verified with the approval system's public key.
    jwt_algorithm: Literal["HS256", "RS256", "ES256"] = "HS256"
    jwt_secret: str = ""
    jwt_public_key_file: Path | None = None
    jwt_private_key_file: Path | None = None
    jwt_issuer: str = "jointreview"
    jwt_audience: str = "jointreview"
    token_ttl_s: int = Field(8 * 3600, ge=60)
    applicant_link_ttl_s: int = Field(4 * 3600, ge=60)
    # An applicant who declines the recording notice (#16): joins by voice only, or not.
    applicant_consent_declined: Literal["audio_only", "leave"] = "audio_only"

    # The department directory (and the demo users, see demo_enabled below).
    directory_file: Path | None = None

    # ICE servers handed to browsers (the SFU itself has a routable host address and uses
    # none): empty by default (intranet: no public STUN).
    ice_servers: list[IceServer] = Field(default_factory=list)

    # Media (the SFU in this process). Host candidates on these addresses (loopback
    # allowed; empty: every interface, loopback included); the address clients must use when it
    # differs (NAT); the UDP port range (0-0: any free port).
    media_enabled: bool = True
    media_listen_ips: list[str] = Field(default_factory=list)
    media_announced_ip: str = ""
    media_port_min: int = Field(0, ge=0, le=65535)
    media_port_max: int = Field(0, ge=0, le=65535)
    media_video_codecs: list[VideoCodec] = Field(default_factory=lambda: list(VIDEO_CODECS))
    # "forward" (the SFU) or "transcode" (aiortc MediaRelay: the benchmark's baseline only)
    media_mode: Literal["forward", "transcode"] = "forward"
    # Media worker processes (each an SFU with its own UDP ports and recorder); 0: one
    # per core this process may use; 1: the SFU runs in the node's own process.
    media_workers: int = Field(0, ge=0, le=256)
    # Failover timings: a media host renews its registry entry every media_heartbeat_s;
    # one silent for media_host_ttl_s is dead and its sessions are placed again (a dead
    # node's sessions come back after about this long); a session's media lease lasts
    # media_lease_s (renewed every third of it; the bound when nobody checks the host);
    # a dead worker starts again after media_restart_min_s, doubling to ..._max_s.
    media_heartbeat_s: float = Field(1.0, gt=0, le=60)
    media_host_ttl_s: float = Field(5.0, gt=0, le=600)
    media_lease_s: float = Field(30.0, gt=0, le=3600)
    media_restart_min_s: float = Field(0.2, gt=0, le=60)
    media_restart_max_s: float = Field(10.0, gt=0, le=600)
    media_min_bitrate: int = Field(150_000, ge=30_000)
    media_max_bitrate: int = Field(2_500_000, ge=100_000)
    # A subscriber whose link carries less video than this gets that video paused (audio
    # goes on; probed again later) instead of dragging everyone below it. 0: never.
    media_video_floor_bitrate: int = Field(150_000, ge=0)
    # Recording of joint reviews, per track and without transcoding, into
    # <data_dir>/archive/<case>/<session>/: "always" (from the first media to the end,
    # nobody can stop it), "clerk" (staff start and stop it), "off".
    recording_policy: Literal["always", "clerk", "off"] = "always"
    # The recorder's queue between the event loop and its writer thread (packets); when
    # it is full, packets are dropped from the recording (never from forwarding).
    recording_queue_packets: int = Field(8192, ge=256, le=1_000_000)
    # A recorded video track with no keyframe for this long gets one asked for (browsers
    # send them only when asked): replay seeks and parallel export start from them.
    recording_keyframe_s: float = Field(10.0, ge=0.0, le=600.0)
    # Composite export: one MP4 per recorded session (H.264 + AAC), made by a background
    # job queued when the session's case file is sealed. export_workers: jobs this node
    # runs at once (0: none here; other nodes on the same Redis take them);
    # export_threads: cores one job may use; export_delay_s: wait after sealing.
    export_workers: int = Field(1, ge=0, le=16)
    export_threads: int = Field(1, ge=1, le=64)
    export_delay_s: float = Field(10.0, ge=0)
    export_width: int = Field(1280, ge=160, le=3840, multiple_of=2)
    export_height: int = Field(720, ge=120, le=2160, multiple_of=2)
    export_fps: int = Field(15, ge=1, le=60)
    export_preset: Literal["ultrafast", "superfast", "veryfast", "faster", "fast", "medium"] = (
        "ultrafast"
    )
    export_video_kbps: int = Field(900, ge=100, le=20_000)
    # Font for the names burned into the export (empty: a CJK font found on the system).
    export_font: Path | None = None
    # The opinion sheet (联审会办意见单) in each case file: its CJK font (empty: Noto Sans
    # CJK from fonts-noto-cjk) and the time zone its times are printed in (IANA name;
    # empty: the server's own).
    opinion_sheet_font: Path | None = None
    opinion_sheet_timezone: str = ""
    # coturn use-auth-secret: TURN servers in ice_servers get time-limited credentials.
    turn_secret: str = ""
    turn_ttl_s: int = Field(6 * 3600, ge=60)
    # The pages' iceTransportPolicy; "relay": only through the TURN servers of ice_servers.
    ice_transport_policy: Literal["all", "relay"] = "all"

    max_message_bytes: int = Field(64 * 1024, ge=1024, le=16 * 1024 * 1024)
    snapshot_max_bytes: int = Field(20 * 1024 * 1024, ge=64 * 1024)
    # The server notices a dead socket (a cut, a new address) within about 1.5 × this;
    # the page notices by itself in 2.5 s (its own pings). Not shorter by default: aiohttp
    # pings each socket silent this long, and a node holds thousands of idle inbox sockets
    # whose pages ping only every 10 s.
    heartbeat_s: float = Field(5.0, gt=0)
    resume_grace_s: float = Field(30.0, gt=0)
    ring_timeout_s: float = Field(120.0, gt=0)
    # A broken-off session (every slot left: everyone went without ending it, or lost the
    # connection past resume_grace_s; or nobody ever joined) is ended by the sweeper this
    # long after, as session.ended reason "broken_off": replayable and counted. 0: never.
    abandoned_session_s: float = Field(300.0, ge=0)
    # The former name of abandoned_session_s (its default was 600); when set, it wins.
    session_idle_end_s: float | None = Field(None, ge=0)
    # Supervisors watching a live session receive-only (signaling/observation.py):
    # "announced" (every participant's page says so), "silent" or "off" (refused).
    observation: Literal["announced", "silent", "off"] = "announced"
    # Supervision (signaling/history/raising.py): an answer slower than this after the
    # invitation raises long_wait; a media.quality report with this loss (0..1) or this
    # much frozen video raises media_quality. Statistics count days in this time zone.
    exception_long_wait_s: float = Field(60.0, gt=0)
    exception_media_loss: float = Field(0.05, gt=0, le=1)
    exception_media_frozen_s: float = Field(3.0, gt=0)
    stats_timezone: str = "Asia/Shanghai"

    # -- limits (docs/security.md): one link must not take a session or a node down ------
    # Messages on one socket: a token bucket of ws_burst, refilled at ws_rate_per_s.
    ws_rate_per_s: float = Field(20.0, gt=0)
    ws_burst: int = Field(40, ge=1)
    # All sockets of one identity (sub) on this node together.
    identity_rate_per_s: float = Field(40.0, gt=0)
    identity_burst: int = Field(80, ge=1)
    # Sockets one identity may hold on this node (the oldest is closed for a new one), and
    # sockets from one client address (a hall behind one NAT address holds many people).
    max_sockets_per_identity: int = Field(8, ge=1, le=10_000)
    max_sockets_per_address: int = Field(256, ge=1, le=100_000)
    # Chat: characters in one message, messages per minute in one session (all senders).
    chat_max_chars: int = Field(2000, ge=1, le=20_000)
    chat_per_minute_per_session: int = Field(120, ge=1)
    # Lists that grow (case events, sessions, replay markers): default and largest page.
    page_default: int = Field(100, ge=1, le=10_000)
    page_max: int = Field(500, ge=1, le=10_000)
    # Sign-in attempts (demo sign-in) per client address per minute.
    signin_per_minute: int = Field(10, ge=1)

    # -- exposure ------------------------------------------------------------------------
    # Demo sign-in mints any identity for anyone who asks. None (default): on only when
    # the server listens on loopback; true turns it on anywhere (with a loud warning).
    demo_enabled: bool | None = None
    # The longest lifetime a token (exp - iat) or a replay/case-file grant may have.
    token_max_ttl_s: int = Field(24 * 3600, ge=60)
    grant_max_ttl_s: int = Field(24 * 3600, ge=60)
    # Origins allowed to open /ws and post to the API from a browser (scheme://host:port).
    # Empty: the server's own origin (public_url, or the Host the request came to).
    allowed_origins: list[str] = Field(default_factory=list)
    # Reverse proxies whose X-Forwarded-For names the client (addresses or CIDR blocks).
    trusted_proxies: list[str] = Field(default_factory=list)
    # Below this much free space in data_dir, healthz is not ok and no recorded session
    # starts (a full disk must never cost a recording or the record).
    disk_min_free_bytes: int = Field(512 * 1024 * 1024, ge=0)
    # The audit trail (signaling/audit.py): entries older than this are dropped.
    audit_retention_days: int = Field(180, ge=1)
    log_format: Literal["text", "json"] = "text"  # docs/operations.md
    metrics_listen: str = Field("", pattern=r"^$|^\[?[0-9A-Za-z.:-]+\]?:[0-9]{1,5}$")  # host:port

    @field_validator("redis_url")
    @classmethod
    def _redis_scheme(cls, v: str) -> str:
        if v and not v.startswith(("redis://", "rediss://", "unix://", "redis+sentinel://")):
            raise ValueError("must start with redis://, rediss://, unix:// or redis+sentinel://")
        if v.startswith("redis+sentinel://"):
            from .state.redis_connect import parse_sentinel_url

            parse_sentinel_url(v)  # ValueError: says what is wrong with it
        return v

    @field_validator("database_url")
    @classmethod
    def _database_scheme(cls, v: str) -> str:
        if v and not v.startswith(("sqlite+aiosqlite:///", "postgresql+asyncpg://")):
            raise ValueError("must start with sqlite+aiosqlite:/// or postgresql+asyncpg://")
        return v

    @field_validator("opinion_sheet_timezone")
    @classmethod
    def _sheet_zone(cls, v: str) -> str:
        if v:
            from recording.sheet import zone

            zone(v)  # ValueError: unknown time zone
        return v

    @field_validator("stats_timezone")
    @classmethod
    def _stats_zone(cls, v: str) -> str:
        from zoneinfo import ZoneInfo

        try:
            ZoneInfo(v)
        except (ValueError, OSError, KeyError):
            raise ValueError("must be a time zone name, such as Asia/Shanghai") from None
        return v

    @field_validator("trusted_proxies")
    @classmethod
    def _proxies(cls, v: list[str]) -> list[str]:
        for item in v:
            try:
                ipaddress.ip_network(item, strict=False)
            except ValueError:
                raise ValueError(f"{item!r}: not an address or CIDR block") from None
        return v

    @field_validator("allowed_origins")
    @classmethod
    def _origins(cls, v: list[str]) -> list[str]:
        for item in v:
            if not item.startswith(("http://", "https://")) or item.endswith("/"):
                raise ValueError(f"{item!r}: an origin is scheme://host[:port], no path")
        return v

    @model_validator(mode="after")
    def _media_timings(self) -> Config:
        if self.media_host_ttl_s <= self.media_heartbeat_s:
            # Not longer, and a living host's entry would lapse between two heartbeats.
            raise ValueError("media_host_ttl_s must be longer than media_heartbeat_s")
        if self.media_lease_s < 3 * self.media_heartbeat_s:
            raise ValueError("media_lease_s must be at least 3 × media_heartbeat_s")
        if self.media_restart_max_s < self.media_restart_min_s:
            raise ValueError("media_restart_max_s must not be below media_restart_min_s")
        return self

    @model_validator(mode="after")
    def _port_range(self) -> Config:
        if (self.media_port_min == 0) != (self.media_port_max == 0):
            raise ValueError("media_port_min and media_port_max: set both or neither")
        if self.media_port_min > self.media_port_max:
            raise ValueError("media_port_min must not exceed media_port_max")
        return self

    @model_validator(mode="after")
    def _lifetimes(self) -> Config:
        # The server must not sign what it would refuse (auth.TokenService.verify).
        for name in ("token_ttl_s", "applicant_link_ttl_s"):
            if getattr(self, name) > self.token_max_ttl_s:
                raise ValueError(f"{name} must not exceed token_max_ttl_s")
        return self

    @model_validator(mode="after")
    def _pages(self) -> Config:
        if self.page_default > self.page_max:
            raise ValueError("page_default must not exceed page_max")
        return self

    @property
    def broken_off_after_s(self) -> float:
        """abandoned_session_s, or its former name when a deployment still sets that."""
        old = self.session_idle_end_s
        return self.abandoned_session_s if old is None else old

    @property
    def demo_on(self) -> bool:
        """Demo sign-in in force: explicitly, or by default on a loopback listener only."""
        if self.demo_enabled is not None:
            return self.demo_enabled
        return is_loopback(self.host)

    @property
    def base_url(self) -> str:
        if self.public_url:
            return self.public_url.rstrip("/")
        host = "127.0.0.1" if self.host in ("0.0.0.0", "::", "") else self.host
        return f"http://{host}:{self.port}"


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


FIELDS = tuple(Config.model_fields)


def _flatten_toml(doc: Mapping[str, Any]) -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in doc.items():
        if isinstance(value, dict) and key not in ("ice_servers", "seal_public_keys"):
            for sub, subval in value.items():
                flat[f"{key}_{sub}"] = subval
        else:
            flat[key] = value
    return flat


def _from_env(environ: Mapping[str, str]) -> dict[str, tuple[Any, str]]:
    found: dict[str, tuple[Any, str]] = {}
    for name in FIELDS:
        var = "JR_" + name.upper()
        if var not in environ:
            continue
        raw = environ[var]
        value: Any = raw
        annotation = str(Config.model_fields[name].annotation)
        if "list" in annotation or "dict" in annotation:
            try:
                value = json.loads(raw)
            except json.JSONDecodeError as exc:
                raise ConfigError(f"{name} (from {var}): not valid JSON: {exc}") from exc
        found[name] = (value, var)
    return found


def load_config(
    flags: Mapping[str, Any] | None = None,
    config_file: str | Path | None = None,
    environ: Mapping[str, str] | None = None,
) -> Config:
    """Merge the sources; raise ConfigError naming the first bad setting."""
    environ = os.environ if environ is None else environ
    sources: dict[str, tuple[Any, str]] = {}
    path = config_file or environ.get("JR_CONFIG")
    if path:
        p = Path(path)
        try:
            doc = tomllib.loads(p.read_text(encoding="utf-8"))
        except FileNotFoundError as exc:
            raise ConfigError(f"config file {p}: not found") from exc
        except OSError as exc:
            raise ConfigError(f"config file {p}: cannot read: {exc.strerror}") from exc
        except UnicodeDecodeError as exc:
            raise ConfigError(f"config file {p}: not UTF-8: {exc}") from exc
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"config file {p}: invalid TOML: {exc}") from exc
        for name, value in _flatten_toml(doc).items():
            if name not in FIELDS:
                raise ConfigError(f"{name} (in {p}): unknown setting")
            sources[name] = (value, str(p))
    sources.update(_from_env(environ))
    for name, value in (flags or {}).items():
        if value is not None:
            sources[name] = (value, "--" + name.replace("_", "-"))
    try:
        return Config(**{k: v for k, (v, _) in sources.items()})
    except ValidationError as exc:
        err = exc.errors()[0]
        if not err["loc"]:  # a rule across settings: its message names them
            raise ConfigError(str(err["msg"]).removeprefix("Value error, ")) from exc
        name = str(err["loc"][0])
        origin = sources.get(name, (None, "default"))[1]
        raise ConfigError(f"{name} (from {origin}): {err['msg']}") from exc


def ensure_jwt_secret(config: Config) -> str:
    """Return the HS256 secret, generating and persisting one on first start."""
    if config.jwt_secret:
        return config.jwt_secret
    path = config.data_dir / "jwt_secret"
    try:
        secret = path.read_text(encoding="ascii").strip()
        if secret:
            return secret
    except FileNotFoundError:
        pass
    path.parent.mkdir(parents=True, exist_ok=True)
    secret = secrets.token_urlsafe(48)
    # Created 0600 and written atomically: another node may start at the same time.
    tmp = path.with_suffix(f".tmp{os.getpid()}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="ascii") as fh:
        fh.write(secret + "\n")
    try:
        os.link(tmp, path)
    except FileExistsError:
        existing = path.read_text(encoding="ascii").strip()
        if existing:
            secret = existing  # another node won the race: use its secret
        else:
            # An empty file (a crash while it was first written): nothing was ever
            # signed with it, so replace it.
            os.replace(tmp, path)
            return secret
    tmp.unlink()
    return secret
