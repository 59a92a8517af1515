"""Server creation in the Hetzner Cloud API emulator (a mixin of :class:`HcloudEmulator`).

    GET    /v1/server_types | /v1/locations | /v1/images      name, page, per_page
    GET    /v1/ssh_keys                   name, fingerprint, label_selector, page, per_page
    POST   /v1/ssh_keys                   {"name", "public_key", "labels"}
    GET    /v1/ssh_keys/{id}
    DELETE /v1/ssh_keys/{id}
    POST   /v1/servers                    {"name", "server_type", "image", "location", "ssh_keys",
                                           "user_data", "labels", "public_net": {"enable_ipv4", "enable_ipv6"}}
    DELETE /v1/servers/{id}

As on Hetzner, a new server is ``initializing`` with a ``create_server`` action
``running``; both turn ``running``/``success`` when the machine is up.  What a
server *is* comes from a backend: without one (unit tests) it is only data and
is up at once; the lab's backend (mailops/lab/cloud.py) boots a real nspawn
machine from the requested image, with the API's SSH keys and the host key
from the cloud-init ``user_data``.  Deleting a server deletes its Primary IPs
(``auto_delete``) and so their PTRs, and stops the machine.
"""

from __future__ import annotations

import base64
import hashlib
import threading
from typing import Any, Protocol

SERVER_TYPES = {
    name: {"id": i, "name": name, "description": name.upper(), "cores": cores, "memory": mem, "disk": disk,
           "prices": [], "storage_type": "local", "cpu_type": "shared", "architecture": "x86",
           "deprecation": None}
    for i, (name, cores, mem, disk) in enumerate(
        [("cx22", 2, 4.0, 40), ("cx32", 4, 8.0, 80), ("cpx11", 2, 2.0, 40), ("cpx21", 3, 4.0, 80)], start=104)}
LOCATIONS = {
    name: {"id": i, "name": name, "description": desc, "country": country, "city": city, "latitude": 0.0,
           "longitude": 0.0, "network_zone": "eu-central"}
    for i, (name, desc, country, city) in enumerate(
        [("fsn1", "Falkenstein DC Park 1", "DE", "Falkenstein"), ("nbg1", "Nuremberg DC Park 1", "DE", "Nuremberg"),
         ("hel1", "Helsinki DC Park 1", "FI", "Helsinki")], start=1)}
IMAGES = {
    name: {"id": i, "type": "system", "status": "available", "name": name, "description": f"Debian {version}",
           "image_size": None, "disk_size": 5, "created": "2025-08-09T00:00:00+00:00", "created_from": None,
           "bound_to": None, "os_flavor": "debian", "os_version": version, "rapid_deploy": True,
           "protection": {"delete": False}, "deprecated": None, "deleted": None, "labels": {},
           "architecture": "x86"}
    for i, (name, version) in enumerate([("debian-12", "12"), ("debian-13", "13")], start=161547269)}
USER_DATA_LIMIT = 32 * 1024


class MachineBackend(Protocol):
    """What a server is: ``allocate`` is quick (under the emulator's lock), ``boot`` and ``remove`` run in a thread."""

    def allocate(self, name: str, image: str, ipv4: bool, ipv6: bool) -> tuple[str | None, str | None, Any]:
        """(IPv4 address, IPv6 /64, handle); ValueError(message) if the image cannot be served."""

    def boot(self, handle: Any, ssh_public_keys: list[str], user_data: str | None) -> None: ...

    def remove(self, handle: Any) -> None: ...

    def ptr_changed(self, address: str, hostname: str | None) -> None: ...


class PaperBackend:
    """Servers that are only data (no machine), with addresses no test sends to."""

    def __init__(self) -> None:
        self._next = 200

    def allocate(self, name: str, image: str, ipv4: bool, ipv6: bool) -> tuple[str | None, str | None, Any]:
        n, self._next = self._next, self._next + 1
        return (f"198.51.100.{n}" if ipv4 else None), (f"2001:db8:5100:{n}::/64" if ipv6 else None), n

    def boot(self, handle: Any, ssh_public_keys: list[str], user_data: str | None) -> None:
        pass

    def remove(self, handle: Any) -> None:
        pass

    def ptr_changed(self, address: str, hostname: str | None) -> None:
        pass


def md5_fingerprint(public_key: str) -> str:
    """Hetzner's SSH key fingerprint: MD5 of the key blob, colon-separated hex."""
    blob = base64.b64decode(public_key.split()[1])
    return ":".join(f"{b:02x}" for b in hashlib.md5(blob).digest())


class ServerCreation:
    """Mixin: the endpoints above.  Uses the emulator's lock, ids, actions, Primary IPs and errors."""

    backend: MachineBackend

    def _init_servers(self, backend: MachineBackend | None) -> None:
        self.backend = backend or PaperBackend()
        self._ssh_keys: dict[int, dict[str, Any]] = {}
        self._handles: dict[int, Any] = {}

    def server_status(self, name: str) -> str | None:
        """For tests: the status of the server called ``name`` (None: no such server)."""
        with self._lock:
            return next((s["status"] for s in self._servers.values() if s["name"] == name), None)

    # --- routes ------------------------------------------------------------

    def _servers_route(self, method: str, kind: str, rest: list[str], query: dict[str, list[str]],
                       body: bytes) -> tuple[int, dict[str, Any]] | None:
        """The answer for the endpoints above, or None for the other routes."""
        from mailops.lab.hcloudemu import ApiError, _invalid

        catalogue = {"server_types": SERVER_TYPES, "locations": LOCATIONS, "images": IMAGES}.get(kind)
        if catalogue is not None and method == "GET" and not rest:
            name = query.get("name", [None])[-1]
            return 200, self._page(kind, [v for k, v in catalogue.items() if name in (None, k)], query)
        if kind == "ssh_keys":
            if method == "GET" and not rest:
                keys = list(self._ssh_keys.values())
                for field in ("name", "fingerprint"):
                    if (value := query.get(field, [None])[-1]) is not None:
                        keys = [k for k in keys if k[field] == value]
                return 200, self._page(kind, keys, query)
            if method == "POST" and not rest:
                return 201, {"ssh_key": self._create_ssh_key(self._json_object(body))}
            key = self._ssh_keys.get(self._number(rest[0])) if len(rest) == 1 else None
            if key is None:
                raise ApiError(404, "not_found", "ssh_key not found")
            if method == "GET":
                return 200, {"ssh_key": key}
            if method == "DELETE":
                del self._ssh_keys[key["id"]]
                return 204, None  # type: ignore[return-value]
            raise _invalid("method", f"{method} is not allowed here")
        if kind == "servers" and method == "POST" and not rest:
            return 201, self._create_server(self._json_object(body))
        if kind == "servers" and method == "DELETE" and len(rest) == 1:
            server = self._servers.get(self._number(rest[0]))
            if server is None:
                raise ApiError(404, "not_found", f"server with ID '{rest[0]}' not found")
            return 200, {"action": self._delete_server(server)}
        return None

    # --- SSH keys ----------------------------------------------------------

    def _create_ssh_key(self, data: dict[str, Any]) -> dict[str, Any]:
        from mailops.lab.hcloudemu import ApiError, _invalid, _now

        name, public_key = data.get("name"), data.get("public_key")
        if not isinstance(name, str) or not name:
            raise _invalid("name", "is required")
        try:
            fingerprint = md5_fingerprint(public_key)
        except (AttributeError, IndexError, ValueError, TypeError):
            raise _invalid("public_key", "is not a valid SSH public key") from None
        for key in self._ssh_keys.values():
            if key["name"] == name or key["fingerprint"] == fingerprint:
                field = "name" if key["name"] == name else "public_key"
                raise ApiError(409, "uniqueness_error", f"SSH key with the same {field} already exists",
                               {"fields": [{"name": field}]})
        key_id = next(self._ids)
        self._ssh_keys[key_id] = {"id": key_id, "name": name, "fingerprint": fingerprint,
                                  "public_key": public_key.strip(), "labels": dict(data.get("labels") or {}),
                                  "created": _now()}
        return self._ssh_keys[key_id]

    # --- servers -----------------------------------------------------------

    def _create_server(self, data: dict[str, Any]) -> dict[str, Any]:
        from mailops.lab.hcloudemu import ApiError, _invalid, _now, is_valid_hostname

        name = data.get("name")
        if not isinstance(name, str) or not (is_valid_hostname(name) or is_valid_hostname(name + ".x")):
            raise _invalid("name", f"{name!r} is not a valid hostname (RFC 1123)")
        if any(s["name"] == name for s in self._servers.values()):
            raise ApiError(409, "uniqueness_error", "server name is already used", {"fields": [{"name": "name"}]})
        for field, catalogue in (("server_type", SERVER_TYPES), ("image", IMAGES), ("location", LOCATIONS)):
            value = data.get(field, "fsn1" if field == "location" else None)
            if value not in catalogue and value not in {v["id"] for v in catalogue.values()}:
                raise _invalid(field, f"{field} {value!r} not found")
        image = data["image"] if data["image"] in IMAGES else next(k for k, v in IMAGES.items()
                                                                  if v["id"] == data["image"])
        keys = []
        for ref in data.get("ssh_keys") or []:
            key = next((k for k in self._ssh_keys.values() if ref in (k["id"], k["name"])), None)
            if key is None:
                raise _invalid("ssh_keys", f"SSH key {ref!r} not found")
            keys.append(key["public_key"])
        user_data = data.get("user_data")
        if user_data is not None and (not isinstance(user_data, str) or len(user_data.encode()) > USER_DATA_LIMIT):
            raise _invalid("user_data", f"must be a string of at most {USER_DATA_LIMIT} bytes")
        net = data.get("public_net") or {}
        want_v4, want_v6 = net.get("enable_ipv4", True), net.get("enable_ipv6", True)
        try:
            ipv4, ipv6, handle = self.backend.allocate(name, image, want_v4, want_v6)
        except ValueError as exc:
            raise _invalid("image", str(exc)) from None
        server_id = next(self._ids)
        server = {"id": server_id, "name": name, "labels": dict(data.get("labels") or {}), "created": _now(),
                  "status": "initializing", "server_type": SERVER_TYPES.get(data["server_type"]),
                  "image": IMAGES[image], "location": LOCATIONS.get(data.get("location") or "fsn1"),
                  "ipv4_id": self._new_primary_ip(f"{ipv4}/32", f"primary_ip-{server_id}-v4", server_id)
                  if ipv4 else None,
                  "ipv6_id": self._new_primary_ip(ipv6, f"primary_ip-{server_id}-v6", server_id) if ipv6 else None}
        self._servers[server_id] = server
        self._handles[server_id] = handle
        for pip_id in (server["ipv4_id"], server["ipv6_id"]):
            if pip_id is not None:  # the provider's default reverse DNS, where the world sees it
                for ip, ptr in self._primary_ips[pip_id]["ptrs"].items():
                    self.backend.ptr_changed(ip, ptr)
        action = self._background_action("create_server", server, lambda: self.backend.boot(handle, keys, user_data),
                                         done=lambda: server.update(status="running"),
                                         failed=lambda: server.update(status="off"))
        return {"server": self._server_json(server), "action": action, "next_actions": [], "root_password": None}

    def _delete_server(self, server: dict[str, Any]) -> dict[str, Any]:
        handle = self._handles.pop(server["id"], None)
        del self._servers[server["id"]]
        for pip_id in (server["ipv4_id"], server["ipv6_id"]):
            pip = self._primary_ips.pop(pip_id, None) if pip_id is not None else None
            for ip in (pip or {}).get("ptrs", {}):
                self.backend.ptr_changed(ip, None)
        return self._background_action("delete_server", server, lambda: self.backend.remove(handle))

    def _background_action(self, command: str, server: dict[str, Any], work, *, done=lambda: None,
                           failed=lambda: None) -> dict[str, Any]:
        """A running action whose ``work`` runs in a thread; it reports success or error when that ends."""
        from mailops.lab.hcloudemu import _now

        action_id = next(self._ids)
        action = {"id": action_id, "command": command, "status": "running", "progress": 0, "started": _now(),
                  "finished": None, "error": None, "resources": [{"id": server["id"], "type": "server"}],
                  "_polls_left": float("inf"), "_apply": lambda: None}
        self._actions[action_id] = action

        def run() -> None:
            try:
                work()
            except Exception as exc:  # the action reports it, as Hetzner's would
                with self._lock:
                    failed()
                    action.update(status="error", progress=100, finished=_now(),
                                  error={"code": "action_failed", "message": str(exc)[:500]})
                return
            with self._lock:
                done()
                action.update(status="success", progress=100, finished=_now())

        threading.Thread(target=run, name=f"hcloud-emulator-{command}", daemon=True).start()
        return self._action_json(action)

    def _server_view(self, server: dict[str, Any], view: dict[str, Any]) -> dict[str, Any]:
        """A created server's own status, type, image and location in the JSON view."""
        for field in ("status", "server_type", "image", "location"):
            if server.get(field) is not None:
                view[field] = server[field]
        return view

