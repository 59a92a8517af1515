"""Hetzner Cloud servers through the official ``hcloud`` library.

The client, retries and error wording are the reverse DNS provider's
(:class:`HcloudReverseProvider`): the same token and API serve both.  No
provider firewall is attached: the server's own nftables (role ``firewall``)
is the one firewall mailops manages.
"""

from __future__ import annotations

import base64
import hashlib

import hcloud
from hcloud.actions import ActionFailedException, ActionTimeoutException
from hcloud.images import Image
from hcloud.locations import Location
from hcloud.server_types import ServerType
from hcloud.servers import ServerCreatePublicNetwork

from mailops.cloud import MANAGED_LABEL, Server, ServerSpec
from mailops.dns.providers.hcloud import HcloudReverseProvider
from mailops.errors import MailopsError


class HcloudServers(HcloudReverseProvider):
    kind = "hcloud"

    def find(self, name: str) -> Server | None:
        found = self._call(lambda: self._client.servers.get_by_name(name), f"looking up server {name}")
        return None if found is None else _server(found)

    def create(self, spec: ServerSpec) -> Server:
        """Create the server and wait until it runs (the library polls the create action)."""
        self._known("server_type", spec.server_type, self._client.server_types)
        self._known("location", spec.location, self._client.locations)
        self._known("image", spec.image, self._client.images)
        key = self._ssh_key(spec.ssh_public_key)
        doing = f"creating server {spec.name}"
        response = self._call(lambda: self._client.servers.create(
            spec.name, server_type=ServerType(name=spec.server_type), image=Image(name=spec.image),
            location=Location(name=spec.location), ssh_keys=[key],
            user_data=spec.host_key.cloud_config() if spec.host_key else None,
            labels={**spec.labels, MANAGED_LABEL[0]: MANAGED_LABEL[1]},
            public_net=ServerCreatePublicNetwork(enable_ipv4=spec.ipv4, enable_ipv6=spec.ipv6)), doing)
        self._wait(response.action, doing)
        server = self._call(lambda: self._client.servers.get_by_id(response.server.id), f"reading {spec.name}")
        if server.status != "running":
            raise self._fail(f"server {spec.name} is {server.status} after its create action finished; "
                             "see it in the Hetzner Cloud console")
        return _server(server)

    def delete(self, server: Server) -> None:
        bound = self._call(lambda: self._client.servers.get_by_id(server.id), f"looking up server {server.name}")
        action = self._call(lambda: self._client.servers.delete(bound), f"deleting server {server.name}")
        self._wait(action, f"deleting server {server.name}")

    # --- helpers -------------------------------------------------------------

    def _known(self, what: str, value: str, section) -> None:
        """An unknown server type, location or image is one line naming the choices."""
        lookup = ((lambda: section.get_by_name_and_architecture(value, "x86")) if what == "image"
                  else (lambda: section.get_by_name(value)))
        if self._call(lookup, f"looking up {what} {value}") is None:
            names = sorted(x.name for x in self._call(section.get_all, f"listing {what}s") if x.name)
            raise self._fail(f"{what} {value!r} does not exist; choose one of {', '.join(names[:20])}")

    def _ssh_key(self, public_key: str):
        """The project's SSH key with this public key (by fingerprint), uploaded once if missing."""
        parts = public_key.split()
        try:
            blob = base64.b64decode(parts[1], validate=True)
        except (IndexError, ValueError):
            raise self._fail("the SSH public key to install is not an OpenSSH public key line") from None
        fingerprint = ":".join(f"{b:02x}" for b in hashlib.md5(blob).digest())  # Hetzner's key fingerprint
        found = self._call(lambda: self._client.ssh_keys.get_by_fingerprint(fingerprint), "looking up the SSH key")
        if found is not None:
            return found
        name = f"mailops-{fingerprint.replace(':', '')[:12]}"
        return self._call(lambda: self._client.ssh_keys.create(name, public_key=" ".join(parts[:2]),
                                                               labels=dict([MANAGED_LABEL])),
                          "uploading the SSH key")

    def _wait(self, action, doing: str) -> None:
        def wait() -> None:
            try:
                action.wait_until_finished()
            except ActionFailedException as exc:
                error = exc.action.error or {}
                raise self._fail(f"{doing} failed: {error.get('code', '?')}: {error.get('message', '')}") from exc
            except ActionTimeoutException as exc:
                raise self._fail(f"{doing} did not finish in time; see the server in the Hetzner Cloud "
                                 "console and run again (it is found by name)") from exc
        self._call(wait, doing)

    def _api_error(self, exc: hcloud.APIException, doing: str, attempts: int) -> MailopsError:
        if exc.code in ("invalid_input", "uniqueness_error"):
            return self._fail(f"the API refused {doing} ({exc.code}: {exc.message})")
        if exc.code in ("forbidden", "token_readonly", 403):
            return self._fail(f"the API token may not do this ({exc.code}) while {doing}; give api_token of "
                              f"mailops_reverse_dns_providers.{self.name} Read & Write permission")
        return super()._api_error(exc, doing, attempts)


def _server(bound) -> Server:
    net = bound.public_net
    return Server(id=bound.id, name=bound.name, status=bound.status,
                  ipv4=net.ipv4.ip if net and net.ipv4 else None,
                  ipv6_network=net.ipv6.ip if net and net.ipv6 else None,
                  server_type=bound.server_type.name if bound.server_type else "?",
                  location=bound.location.name if getattr(bound, "location", None) else "?",
                  image=bound.image.name if bound.image else None,
                  managed=(bound.labels or {}).get(MANAGED_LABEL[0]) == MANAGED_LABEL[1])
